//! Small helpers: URL redaction, error classification, secret wrappers.

use std::fmt;

use obd_core::{Error, ErrorKind};
use reqwest::Url;

/// A string that must never be printed (token, password, header value).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `url` without user info and with any query string replaced by `?…` (presigned URLs carry
/// signatures in the query).
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let had_query = u.query().is_some();
    u.set_query(None);
    u.set_fragment(None);
    let mut s = u.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

/// Same as [`redact_url`] for a string that may not parse.
pub(crate) fn redact_str(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact_url(&u),
        Err(_) => match url.split_once('?') {
            Some((a, _)) => format!("{a}?…"),
            None => url.to_string(),
        },
    }
}

/// `host[:port]` of a URL (port only when explicit and non-default).
pub(crate) fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The repository name of a `…/v2/<repo>/blobs[/<digest>]` URL (`ns/repo`), or the path.
pub(crate) fn repo_name(url: &Url) -> String {
    let path = url.path().trim_start_matches('/');
    let path = path.strip_prefix("v2/").unwrap_or(path);
    match path.rfind("/blobs") {
        Some(i) => path[..i].to_string(),
        None => path.to_string(),
    }
}

/// A description of a reqwest error without its URL (which may carry a presigned query),
/// with the whole source chain.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "connection broken while reading the body".to_string()
    } else if e.is_request() {
        "request failed".to_string()
    } else {
        "HTTP error".to_string()
    };
    let mut src = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(inner) = src {
        let t = inner.to_string();
        // hyper/hyper-util nest errors whose texts repeat; keep distinct parts only.
        if !t.is_empty() && !last.contains(&t) && !t.contains("http://") && !t.contains("https://")
        {
            s.push_str(": ");
            s.push_str(&t);
        }
        last = t;
        src = inner.source();
    }
    s
}

/// Whether a reqwest error is a TLS certificate/handshake failure (not worth retrying).
pub(crate) fn is_tls_error(e: &reqwest::Error) -> bool {
    let text = describe_reqwest(e).to_ascii_lowercase();
    text.contains("certificate") || text.contains("handshake") || text.contains("tls")
}

/// Where the system CA bundle would be, if any exists (used only to explain TLS failures).
pub(crate) fn system_ca_bundle() -> Option<String> {
    if let Ok(f) = std::env::var("SSL_CERT_FILE")
        && std::path::Path::new(&f).is_file()
    {
        return Some(f);
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).is_file())
    .map(|p| p.to_string())
}

/// One failed attempt: the error, whether retrying may help, and its metric kind.
#[derive(Debug)]
pub(crate) struct Failure {
    pub err: Error,
    pub retry: bool,
    pub metric: &'static str,
}

impl Failure {
    /// A failure worth retrying; `metric` `"timeout"` (stalls, connect timeouts) gives kind
    /// `TimedOut`, anything else `Io`.
    pub fn retryable(metric: &'static str, msg: impl Into<String>) -> Self {
        let kind = if metric == "timeout" {
            ErrorKind::TimedOut
        } else {
            ErrorKind::Io
        };
        Failure {
            err: Error::new(kind, msg),
            retry: true,
            metric,
        }
    }

    /// A failure retrying cannot fix.
    pub fn fatal(kind: ErrorKind, metric: &'static str, msg: impl Into<String>) -> Self {
        Failure {
            err: Error::new(kind, msg),
            retry: false,
            metric,
        }
    }

    /// Classify a transport error of a request to `url`.
    pub fn from_reqwest(e: &reqwest::Error, url: &Url) -> Self {
        let what = describe_reqwest(e);
        let host = host_port(url);
        if e.is_connect() && url.scheme() == "https" && is_tls_error(e) {
            let hint = match system_ca_bundle() {
                Some(_) => format!(
                    "the server certificate is not trusted; add its CA with the `ca_file` \
                     option of host \"{host}\" (or, knowingly, set `insecure`)"
                ),
                None => format!(
                    "no system CA bundle was found (install ca-certificates or set \
                     SSL_CERT_FILE), and host \"{host}\" has no `ca_file`"
                ),
            };
            return Failure::fatal(
                ErrorKind::Io,
                "connect",
                format!("TLS connection to {host} failed: {what}; {hint}"),
            );
        }
        let metric = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "truncated"
        };
        Failure::retryable(metric, format!("{host}: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_query_and_userinfo() {
        let u = Url::parse("https://u:pw@s3.example/bucket/obj?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact_url(&u), "https://s3.example/bucket/obj?…");
        assert_eq!(redact_str("not a url?secret=1"), "not a url?…");
        assert_eq!(format!("{:?}", Secret("tok".into())), "<redacted>");
    }

    #[test]
    fn repo_and_host() {
        let u = Url::parse("https://reg.io:5000/v2/ns/app/blobs/sha256:ab").unwrap();
        assert_eq!(repo_name(&u), "ns/app");
        assert_eq!(host_port(&u), "reg.io:5000");
        let u = Url::parse("https://reg.io:443/v2/app/blobs").unwrap();
        assert_eq!(repo_name(&u), "app");
        assert_eq!(host_port(&u), "reg.io");
    }
}
