//! One ranged fetch: the retry loop under a deadline and one attempt (auth rounds, the
//! redirect hop, the P2P prefix). Answers are validated in `response.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use obd_core::{Error, ErrorKind, Result};
use obd_metrics::Metrics;
use reqwest::header::{AUTHORIZATION, HeaderValue, LOCATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, Url};
use tokio::time::Instant;

use crate::auth::{RepoAuth, Token, basic_header, header, place};
use crate::blob::{BlobState, Progress};
use crate::challenge::{Challenge, parse_challenges};
use crate::util::{Failure, host_port, redact_url};

/// Challenge/credential rounds within one attempt.
const MAX_AUTH_ROUNDS: usize = 4;

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// `len` (> 0) bytes at `off`.
    Range { off: u64, len: u64 },
    /// The blob size (`Range: bytes=0-0`).
    Probe,
}

pub(crate) enum Got {
    /// The bytes asked for.
    Bytes(Vec<u8>),
    /// The blob size.
    Size(u64),
}

fn internal(what: &str) -> Error {
    Error::new(ErrorKind::Io, format!("internal error: {what}"))
}

impl BlobState {
    /// `len` bytes at `off`, within `deadline`.
    pub async fn fetch_range(&self, off: u64, len: u64, deadline: Instant) -> Result<Vec<u8>> {
        let progress = Progress::default();
        let want = Want::Range { off, len };
        let res =
            tokio::time::timeout_at(deadline, self.retry_loop(want, deadline, &progress)).await;
        let what = format!("reading {len} bytes");
        match res {
            Ok(Ok(Got::Bytes(b))) => {
                Metrics::global().add_fetched(&self.digest, len);
                Ok(b)
            }
            Ok(Ok(Got::Size(_))) => Err(internal("size answer to a range read")),
            Ok(Err(e)) => Err(e.context(what).with_path(&self.display_url).at_offset(off)),
            Err(_) => {
                Metrics::global().add_error("timeout");
                Err(self.timed_out(
                    &what,
                    off,
                    progress.attempts.load(Ordering::Relaxed),
                    last(&progress),
                ))
            }
        }
    }

    /// The blob size, within `deadline`.
    pub async fn probe_size(&self, deadline: Instant) -> Result<u64> {
        let progress = Progress::default();
        let res =
            tokio::time::timeout_at(deadline, self.retry_loop(Want::Probe, deadline, &progress))
                .await;
        let what = "probing the blob size";
        match res {
            Ok(Ok(Got::Size(s))) => Ok(s),
            Ok(Ok(Got::Bytes(_))) => Err(internal("data answer to a size probe")),
            Ok(Err(e)) => Err(e.context(what).with_path(&self.display_url)),
            Err(_) => {
                Metrics::global().add_error("timeout");
                Err(self.timed_out(
                    what,
                    0,
                    progress.attempts.load(Ordering::Relaxed),
                    last(&progress),
                ))
            }
        }
    }

    async fn retry_loop(&self, want: Want, deadline: Instant, progress: &Progress) -> Result<Got> {
        let retries = self.shared.opts.retries;
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 0u32;
        loop {
            progress.attempts.fetch_add(1, Ordering::Relaxed);
            let f = match self.attempt(want, attempt > 0).await {
                Ok(g) => return Ok(g),
                Err(f) => f,
            };
            Metrics::global().add_error(f.metric);
            *progress.last.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(f.err.message().to_string());
            if !f.retry {
                return Err(f.err);
            }
            if attempt >= retries || Instant::now() + backoff >= deadline {
                let n = attempt + 1;
                let plural = if n == 1 { "" } else { "s" };
                return Err(f.err.context(format!("gave up after {n} attempt{plural}")));
            }
            tracing::debug!(layer = %self.digest, attempt, error = %f.err, "retrying registry request");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }

    async fn attempt(&self, want: Want, retry: bool) -> Result<Got, Failure> {
        if let Some(target) = self.actual_url() {
            return self.read_actual(target, want, retry).await;
        }
        let mut refreshed = false;
        for _ in 0..MAX_AUTH_ROUNDS {
            let auth = self.shared.repo_auth(&self.repo_key);
            let mut used_token = None;
            let authz = match &auth {
                RepoAuth::Anonymous => None,
                RepoAuth::Basic(c) => Some(basic_header(c)?),
                RepoAuth::Bearer(ch) => {
                    let (tok, fresh) = self.shared.bearer_token(ch, &self.url).await?;
                    let h = header(format!("Bearer {}", tok.value.0))?;
                    used_token = Some((tok, fresh));
                    Some(h)
                }
            };
            let resp = self.send(&self.url, want, authz, retry).await?;
            let status = resp.status().as_u16();
            if status == 401 || status == 403 {
                let ch = parse_challenges(
                    resp.headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                drop(resp);
                self.on_challenge(status, auth, ch, used_token, &mut refreshed)
                    .await?;
                continue;
            }
            if (300..400).contains(&status) && status != 304 {
                let target = self.location(&resp, status)?;
                drop(resp);
                tracing::debug!(layer = %self.digest, target = %redact_url(&target), "blob redirected; caching the target");
                self.set_actual(target.clone());
                return self.read_actual(target, want, retry).await;
            }
            return self.read_response(resp, want, None).await;
        }
        Err(Failure::fatal(
            ErrorKind::PermissionDenied,
            "auth",
            format!(
                "authentication with {} did not settle after {MAX_AUTH_ROUNDS} rounds",
                place(&self.url)
            ),
        ))
    }

    /// React to a 401/403: adopt the challenge, look up (new) credentials, or refresh a
    /// token once; `Err` when the registry has definitely refused.
    async fn on_challenge(
        &self,
        status: u16,
        before: RepoAuth,
        ch: Option<Challenge>,
        used_token: Option<(Token, bool)>,
        refreshed: &mut bool,
    ) -> Result<(), Failure> {
        let place = place(&self.url);
        let denied = |msg: String| Failure::fatal(ErrorKind::PermissionDenied, "auth", msg);
        let rejected = |user: &str| {
            denied(format!(
                "registry rejected the credentials of user '{user}' for {place} (HTTP {status})"
            ))
        };
        match (ch, before) {
            (None, RepoAuth::Basic(c)) => Err(rejected(&c.username)),
            (None, _) => Err(denied(format!(
                "registry refused access to {place} (HTTP {status}, no usable authentication challenge)"
            ))),
            (Some(Challenge::Basic), before) => {
                let new = self.shared.lookup_credentials(&self.url).await?;
                match (new, before) {
                    (Some(new), RepoAuth::Basic(old)) if new == old => Err(rejected(&old.username)),
                    (Some(new), _) => {
                        self.shared
                            .set_repo_auth(&self.repo_key, RepoAuth::Basic(new));
                        Ok(())
                    }
                    (None, _) => Err(denied(format!(
                        "registry requires credentials for {place} (HTTP {status}), but none were found ({})",
                        self.shared.providers_text()
                    ))),
                }
            }
            (Some(Challenge::Bearer(ch)), RepoAuth::Bearer(old)) if ch == old => {
                let Some((tok, fresh)) = used_token else {
                    return Err(denied(format!(
                        "registry refused access to {place} (HTTP {status})"
                    )));
                };
                if !fresh && !*refreshed {
                    // Expired or revoked mid-read: fetch a new token once.
                    *refreshed = true;
                    self.shared.drop_token(&ch, &tok).await;
                    return Ok(());
                }
                Err(denied(match tok.user {
                    Some(u) => format!(
                        "registry rejected the token issued to user '{u}' for {place} (HTTP {status}): \
                         the credentials were rejected or lack pull access"
                    ),
                    None => format!(
                        "registry refused anonymous access to {place} (HTTP {status}); configure credentials ({})",
                        self.shared.providers_text()
                    ),
                }))
            }
            (Some(Challenge::Bearer(ch)), _) => {
                self.shared
                    .set_repo_auth(&self.repo_key, RepoAuth::Bearer(ch));
                Ok(())
            }
        }
    }

    fn location(&self, resp: &Response, status: u16) -> Result<Url, Failure> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::retryable(
                    "http_4xx",
                    format!("redirect (HTTP {status}) without a Location"),
                )
            })?;
        let u = self.url.join(loc).map_err(|_| {
            Failure::fatal(
                ErrorKind::Io,
                "http_4xx",
                format!("redirect (HTTP {status}) to an invalid Location"),
            )
        })?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Failure::fatal(
                ErrorKind::Io,
                "http_4xx",
                format!("redirect (HTTP {status}) to a non-HTTP location"),
            ));
        }
        Ok(u)
    }

    /// Read from the cached redirect target (no `Authorization`); any failure drops it so
    /// the next attempt re-resolves through the registry.
    async fn read_actual(&self, target: Url, want: Want, retry: bool) -> Result<Got, Failure> {
        let res = async {
            let resp = self.send(&target, want, None, retry).await?;
            let status = resp.status().as_u16();
            let shown = redact_url(&target);
            match status {
                200 | 206 | 404 | 416 => self.read_response(resp, want, Some(&target)).await,
                300..=399 => Err(Failure::retryable(
                    "http_4xx",
                    format!("redirect target {shown} redirected again (HTTP {status}); only one hop is followed"),
                )),
                _ => Err(Failure::retryable(
                    if status >= 500 { "http_5xx" } else { "http_4xx" },
                    format!("redirect target {shown} answered HTTP {status}"),
                )),
            }
        }
        .await;
        res.map_err(|mut f| {
            self.drop_actual();
            f.retry = true;
            f
        })
    }

    async fn send(
        &self,
        url: &Url,
        want: Want,
        authz: Option<HeaderValue>,
        retry: bool,
    ) -> Result<Response, Failure> {
        let prefix = self.shared.p2p_prefix.as_deref();
        let via_p2p = prefix.is_some() && self.p2p.load(Ordering::Relaxed);
        let target = match prefix {
            Some(p) if via_p2p => Url::parse(&format!("{p}/{url}")).map_err(|_| {
                Failure::fatal(ErrorKind::InvalidInput, "connect", "invalid P2P proxy URL")
            })?,
            _ => url.clone(),
        };
        let range = match want {
            Want::Range { off, len } => format!("bytes={off}-{}", off + len.saturating_sub(1)),
            Want::Probe => "bytes=0-0".to_string(),
        };
        let mut req = self
            .shared
            .client_for(&target)
            .get(target.clone())
            .header(RANGE, range);
        if let Some(h) = authz {
            req = req.header(AUTHORIZATION, h);
        }
        Metrics::global().add_request(&self.digest, retry);
        let stall = self.shared.opts.stall_timeout;
        match tokio::time::timeout(stall, req.send()).await {
            Err(_) => Err(Failure::retryable(
                "timeout",
                format!("no answer from {} within {stall:?}", host_port(&target)),
            )),
            Ok(Err(e)) => {
                if via_p2p && e.is_connect() {
                    self.p2p.store(false, Ordering::Relaxed);
                    tracing::warn!(layer = %self.digest, "P2P proxy connection failed; reading this blob directly from the registry from now on");
                }
                Err(Failure::from_reqwest(&e, &target))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }
}

fn last(p: &Progress) -> Option<String> {
    p.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
