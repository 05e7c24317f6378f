//! Registry authentication: per-repository challenge state, credential lookup, and the
//! bearer token cache (single-flight per realm/service/scope).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use obd_core::ErrorKind;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde_json::Value;
use tokio::time::Instant;

use crate::challenge::Bearer;
use crate::credentials::Credential;
use crate::registry::Shared;
use crate::util::{Failure, Secret, host_port, repo_name};

/// Token answers larger than this are refused.
const MAX_TOKEN_BODY: usize = 16 << 10;
/// `expires_in` when the token server gives none.
const DEFAULT_TOKEN_LIFE: u64 = 60;

/// What a repository asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepoAuth {
    /// No challenge seen (yet): requests are anonymous.
    Anonymous,
    /// Basic: this credential on every request.
    Basic(Credential),
    /// Bearer: a token from this challenge on every request.
    Bearer(Bearer),
}

/// A bearer token and until when it is used.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: Secret,
    pub refresh_at: Instant,
    /// The user it was issued for (`None`: anonymous).
    pub user: Option<String>,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Auth state shared by all blobs of a registry client.
#[derive(Default)]
pub(crate) struct AuthCache {
    repos: Mutex<HashMap<String, RepoAuth>>,
    tokens: Mutex<HashMap<Bearer, TokenSlot>>,
}

/// An `Authorization` header value, marked sensitive (never shown by `Debug`).
pub(crate) fn header(value: String) -> Result<HeaderValue, Failure> {
    let mut h = HeaderValue::from_str(&value).map_err(|_| {
        Failure::fatal(
            ErrorKind::PermissionDenied,
            "auth",
            "credential or token contains characters not allowed in an HTTP header",
        )
    })?;
    h.set_sensitive(true);
    Ok(h)
}

pub(crate) fn basic_header(c: &Credential) -> Result<HeaderValue, Failure> {
    let raw = format!("{}:{}", c.username, c.password);
    header(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// `host/repo` for messages.
pub(crate) fn place(url: &Url) -> String {
    format!("{}/{}", host_port(url), repo_name(url))
}

impl Shared {
    /// The current auth mode of a repository.
    pub fn repo_auth(&self, repo_key: &str) -> RepoAuth {
        self.auth
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(repo_key)
            .cloned()
            .unwrap_or(RepoAuth::Anonymous)
    }

    /// Record the auth mode of a repository.
    pub fn set_repo_auth(&self, repo_key: &str, auth: RepoAuth) {
        self.auth
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo_key.to_string(), auth);
    }

    /// A short list of the configured providers, for "no credentials" messages.
    pub fn providers_text(&self) -> String {
        if self.opts.credentials.is_empty() {
            return "no credential providers are configured".to_string();
        }
        let names: Vec<String> = self.opts.credentials.iter().map(|p| p.describe()).collect();
        format!("consulted: {}", names.join(", "))
    }

    /// Ask the providers in order (on a blocking thread: they may read files or block on
    /// HTTP); the first `Some` wins. Provider errors are fatal for the read.
    pub async fn lookup_credentials(&self, blob_url: &Url) -> Result<Option<Credential>, Failure> {
        if self.opts.credentials.is_empty() {
            return Ok(None);
        }
        let providers = self.opts.credentials.clone();
        let url = blob_url.to_string();
        let res = tokio::task::spawn_blocking(move || {
            for p in &providers {
                match p.lookup(&url) {
                    Ok(Some(c)) => return Ok(Some(c)),
                    Ok(None) => {}
                    Err(e) => {
                        let who = p.describe();
                        return Err(if e.message().contains(&who) {
                            e.context("looking up credentials")
                        } else {
                            e.context(format!("looking up credentials via {who}"))
                        });
                    }
                }
            }
            Ok(None)
        })
        .await;
        match res {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Failure {
                err: e,
                retry: false,
                metric: "auth",
            }),
            Err(_) => Err(Failure::fatal(
                ErrorKind::Io,
                "auth",
                "credential lookup panicked or was cancelled",
            )),
        }
    }

    fn token_slot(&self, ch: &Bearer) -> TokenSlot {
        self.auth
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(ch.clone())
            .or_default()
            .clone()
    }

    /// A valid token for `ch` (cached, or fetched now: then `fresh`).
    pub async fn bearer_token(
        &self,
        ch: &Bearer,
        blob_url: &Url,
    ) -> Result<(Token, bool), Failure> {
        let slot = self.token_slot(ch);
        let mut g = slot.lock().await;
        if let Some(t) = &*g
            && Instant::now() < t.refresh_at
        {
            return Ok((t.clone(), false));
        }
        let t = self.fetch_token(ch, blob_url).await?;
        *g = Some(t.clone());
        Ok((t, true))
    }

    /// Forget `used` (rejected by the registry) unless another task already replaced it.
    pub async fn drop_token(&self, ch: &Bearer, used: &Token) {
        let slot = self.token_slot(ch);
        let mut g = slot.lock().await;
        if g.as_ref().is_some_and(|t| t.value == used.value) {
            *g = None;
        }
    }

    async fn fetch_token(&self, ch: &Bearer, blob_url: &Url) -> Result<Token, Failure> {
        let Some(url) = ch.token_url() else {
            return Err(Failure::fatal(
                ErrorKind::PermissionDenied,
                "auth",
                format!(
                    "registry {} sent a Bearer challenge with an unusable realm",
                    host_port(blob_url)
                ),
            ));
        };
        let cred = self.lookup_credentials(blob_url).await?;
        let mut req = self.client_for(&url).get(url.clone());
        if let Some(c) = &cred {
            req = req.header(reqwest::header::AUTHORIZATION, basic_header(c)?);
        }
        let stall = self.opts.stall_timeout;
        let token_host = host_port(&url);
        let mut resp = match tokio::time::timeout(stall, req.send()).await {
            Err(_) => {
                return Err(Failure::retryable(
                    "timeout",
                    format!("token server {token_host}: no answer within {stall:?}"),
                ));
            }
            Ok(Err(e)) => return Err(Failure::from_reqwest(&e, &url)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 | 403 => {
                let msg = match &cred {
                    Some(c) => format!(
                        "the credentials of user '{}' for {} were rejected by token server {token_host} (HTTP {status})",
                        c.username,
                        place(blob_url)
                    ),
                    None => format!(
                        "token server {token_host} refused anonymous access to {} (HTTP {status}); \
                         configure credentials for it ({})",
                        place(blob_url),
                        self.providers_text()
                    ),
                };
                return Err(Failure::fatal(ErrorKind::PermissionDenied, "auth", msg));
            }
            429 | 500..=599 => {
                return Err(Failure::retryable(
                    if status == 429 {
                        "http_4xx"
                    } else {
                        "http_5xx"
                    },
                    format!("token server {token_host} answered HTTP {status}"),
                ));
            }
            _ => {
                return Err(Failure::fatal(
                    ErrorKind::Io,
                    "http_4xx",
                    format!("token server {token_host} answered HTTP {status}"),
                ));
            }
        }
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => {
                    return Err(Failure::retryable(
                        "timeout",
                        format!("token server {token_host}: answer stalled"),
                    ));
                }
                Ok(Err(e)) => return Err(Failure::from_reqwest(&e, &url)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => {
                    if body.len() + c.len() > MAX_TOKEN_BODY {
                        return Err(Failure::fatal(
                            ErrorKind::Io,
                            "auth",
                            format!("token server {token_host}: answer larger than 16 KiB"),
                        ));
                    }
                    body.extend_from_slice(&c);
                }
            }
        }
        let (value, life) = parse_token(&body).ok_or_else(|| {
            Failure::fatal(
                ErrorKind::PermissionDenied,
                "auth",
                format!("token server {token_host}: answer has no `token` or `access_token`"),
            )
        })?;
        tracing::debug!(token_server = %token_host, expires_in = life, user = ?cred.as_ref().map(|c| &c.username), "obtained a registry token");
        // Refresh early, at 90 % of the lifetime.
        let refresh = Duration::from_millis(life.saturating_mul(900));
        Ok(Token {
            value: Secret(value),
            refresh_at: Instant::now() + refresh,
            user: cred.map(|c| c.username),
        })
    }
}

/// `{"token"|"access_token": "…", "expires_in": n}` → (token, lifetime in seconds).
fn parse_token(body: &[u8]) -> Option<(String, u64)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let tok = ["token", "access_token"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()))?;
    let life = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_TOKEN_LIFE);
    Some((tok.to_string(), life))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        assert_eq!(
            parse_token(br#"{"token":"a","access_token":"b","expires_in":300}"#),
            Some(("a".into(), 300))
        );
        assert_eq!(
            parse_token(br#"{"access_token":"b"}"#),
            Some(("b".into(), 60))
        );
        assert_eq!(
            parse_token(br#"{"token":"","access_token":"b","expires_in":0}"#),
            Some(("b".into(), 60))
        );
        assert_eq!(parse_token(br#"{"token":5}"#), None);
        assert_eq!(parse_token(b"nope"), None);
    }

    #[test]
    fn headers_are_sensitive() {
        let h = basic_header(&Credential {
            username: "u".into(),
            password: "hunter2".into(),
        })
        .unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("dTpodW50ZXIy"));
        assert!(header("Bearer a\nb".into()).is_err());
    }
}
