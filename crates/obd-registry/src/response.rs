//! Strict validation of a data answer: status, `Content-Range`, exact body length, and
//! servers that ignore `Range`.

use obd_core::ErrorKind;
use reqwest::header::CONTENT_RANGE;
use reqwest::{Response, Url};

use crate::blob::BlobState;
use crate::fetch::{Got, Want};
use crate::util::{Failure, describe_reqwest, host_port, redact_url};

/// A server that ignores `Range` is tolerated (bytes before the offset are skipped) only
/// this far into the blob.
const MAX_SKIP: u64 = 32 << 20;

/// A parsed `Content-Range`: the byte range (`None` for `*`) and the total size (`None` for
/// `*`).
type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// The `Content-Range` of an answer, parsed.
fn content_range(resp: &Response) -> Option<ContentRange> {
    parse_content_range(resp.headers().get(CONTENT_RANGE)?.to_str().ok()?)
}

/// `bytes a-b/total` → (Some((a, b)), Some(total)); `*` parts → `None`.
fn parse_content_range(v: &str) -> Option<ContentRange> {
    let (unit, rest) = v.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, total) = rest.trim().split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if a > b {
                return None;
            }
            Some((a, b))
        }
    };
    Some((range, total))
}

impl BlobState {
    pub(crate) async fn read_response(
        &self,
        mut resp: Response,
        want: Want,
        via: Option<&Url>,
    ) -> Result<Got, Failure> {
        let status = resp.status().as_u16();
        let src = match via {
            Some(u) => format!("redirect target {}", redact_url(u)),
            None => format!("registry {}", host_port(&self.url)),
        };
        let cr = content_range(&resp);
        match (status, want) {
            (206, Want::Probe) => match cr {
                Some((Some((0, 0)), Some(total))) => {
                    // Consume the one byte so the connection can be reused.
                    let _ = self.read_body(&mut resp, 0, 1, true).await;
                    Ok(Got::Size(total))
                }
                Some((_, None)) => Err(Failure::fatal(
                    ErrorKind::Io,
                    "http_4xx",
                    format!("{src} did not tell the blob size (Content-Range total `*`)"),
                )),
                _ => Err(Failure::retryable(
                    "truncated",
                    format!("{src} answered the size probe with a wrong Content-Range"),
                )),
            },
            (200, Want::Probe) => resp.content_length().map(Got::Size).ok_or_else(|| {
                Failure::fatal(
                    ErrorKind::Io,
                    "http_4xx",
                    format!("{src} did not tell the blob size"),
                )
            }),
            (416, Want::Probe) => match cr {
                Some((None, Some(total))) => Ok(Got::Size(total)),
                _ => Err(Failure::fatal(
                    ErrorKind::Io,
                    "http_4xx",
                    format!("{src} answered the size probe with HTTP 416"),
                )),
            },
            (206, Want::Range { off, len }) => {
                let end = off + len - 1;
                if cr.and_then(|c| c.0) != Some((off, end)) {
                    return Err(Failure::retryable(
                        "truncated",
                        format!(
                            "{src} answered bytes {:?} for the requested range {off}-{end}",
                            cr.and_then(|c| c.0)
                        ),
                    ));
                }
                self.read_body(&mut resp, 0, len, true)
                    .await
                    .map(Got::Bytes)
            }
            (200, Want::Range { off, len }) => {
                if off > MAX_SKIP {
                    return Err(Failure::fatal(
                        ErrorKind::Io,
                        "http_4xx",
                        format!("{src} ignored the Range header (HTTP 200 with the whole blob)"),
                    ));
                }
                tracing::debug!(layer = %self.digest, "{src} ignored the Range header; skipping {off} bytes");
                self.read_body(&mut resp, off, len, false)
                    .await
                    .map(Got::Bytes)
            }
            (404, _) => Err(Failure::fatal(
                ErrorKind::NotFound,
                "not_found",
                format!("blob not found ({src} answered HTTP 404)"),
            )),
            (416, _) => Err(Failure::fatal(
                ErrorKind::Io,
                "http_4xx",
                format!(
                    "{src} answered HTTP 416 (range not satisfiable): the blob is smaller than expected"
                ),
            )),
            (429, _) => Err(Failure::retryable(
                "http_4xx",
                format!("{src} answered HTTP 429 (too many requests)"),
            )),
            (500..=599, _) => Err(Failure::retryable(
                "http_5xx",
                format!("{src} answered HTTP {status}"),
            )),
            (401 | 403, _) => Err(Failure::fatal(
                ErrorKind::PermissionDenied,
                "auth",
                format!("{src} refused access (HTTP {status})"),
            )),
            _ => Err(Failure::fatal(
                ErrorKind::Io,
                "http_4xx",
                format!("{src} answered HTTP {status}"),
            )),
        }
    }

    /// Exactly `len` body bytes after skipping `skip`. `exact`: the body must end there
    /// (206); otherwise the rest is dropped (a 200 with the whole blob).
    async fn read_body(
        &self,
        resp: &mut Response,
        mut skip: u64,
        len: u64,
        exact: bool,
    ) -> Result<Vec<u8>, Failure> {
        let want = usize::try_from(len)
            .map_err(|_| Failure::fatal(ErrorKind::InvalidInput, "truncated", "read too large"))?;
        let mut out = Vec::with_capacity(want);
        let stall = self.shared.opts.stall_timeout;
        loop {
            let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => {
                    return Err(Failure::retryable(
                        "timeout",
                        format!(
                            "the answer stalled: no data for {stall:?} after {} of {len} bytes",
                            out.len()
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(Failure::retryable(
                        "truncated",
                        format!(
                            "connection broken after {} of {len} bytes: {}",
                            out.len(),
                            describe_reqwest(&e)
                        ),
                    ));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            let mut c: &[u8] = &chunk;
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(c.len());
                c = c.get(n..).unwrap_or_default();
                skip -= n as u64;
            }
            let room = want - out.len();
            if c.len() > room {
                if exact {
                    return Err(Failure::retryable(
                        "truncated",
                        format!("the answer is longer than the requested {len} bytes"),
                    ));
                }
                out.extend_from_slice(c.get(..room).unwrap_or_default());
                return Ok(out);
            }
            out.extend_from_slice(c);
            if !exact && out.len() == want {
                return Ok(out);
            }
        }
        if out.len() != want {
            return Err(Failure::retryable(
                "truncated",
                format!("the answer ended after {} of {len} bytes", out.len()),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_content_range as p;

    #[test]
    fn content_range_parsing() {
        assert_eq!(p("bytes 0-0/10"), Some((Some((0, 0)), Some(10))));
        assert_eq!(p("Bytes  5-9/*"), Some((Some((5, 9)), None)));
        assert_eq!(p("bytes */0"), Some((None, Some(0))));
        assert_eq!(p("bytes 9-5/10"), None);
        assert_eq!(p("items 0-1/2"), None);
        assert_eq!(p("bytes 0-x/2"), None);
        assert_eq!(p("bytes 0-1"), None);
        assert_eq!(p(""), None);
    }
}
