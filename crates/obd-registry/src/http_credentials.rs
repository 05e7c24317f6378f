//! Credentials from an HTTP credential server (upstream `credentialConfig.mode` `http`,
//! `https` and `uds`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::BodyExt;
use obd_core::{Error, ErrorKind, Result};
use reqwest::Url;
use serde_json::Value;

use crate::credentials::{Auths, Credential, CredentialProvider};
use crate::rt::OwnedRuntime;
use crate::util::{describe_reqwest, redact_str};

/// Largest credential-server answer read.
const MAX_BODY: usize = 1 << 20;

/// How [`HttpCredentials`] reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// Plain HTTP: `path` is a URL.
    Http,
    /// HTTPS: `path` is a URL; optional client certificate and pinned server CA.
    Https,
    /// HTTP over the Unix socket `path`; the request goes to `/auth`.
    Uds,
}

enum Transport {
    Http(reqwest::Client),
    Uds,
}

/// Asks a credential server for the credentials of each blob URL:
/// `GET <path>?remote_url=<blob URL>` (over a Unix socket: `GET /auth?remote_url=…`, host
/// `localhost`), answered by
/// `{"traceId":"…","success":true,"data":{"auths":{"<key>":{"username":…,"password":…}|{"auth":…}}}}`.
/// The `auths` map is matched like [`crate::FileCredentials`] (longest prefix wins).
/// The blob URL is percent-encoded in the query (upstream sends it raw; decoding servers
/// see the same value). Each lookup is bounded by `timeout`.
pub struct HttpCredentials {
    mode: HttpMode,
    path: String,
    timeout: Duration,
    // Setup errors (unreadable certificate, …) are reported by every lookup.
    setup: std::result::Result<(OwnedRuntime, Transport), String>,
}

impl fmt::Debug for HttpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCredentials")
            .field("mode", &self.mode)
            .field("path", &redact_str(&self.path))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpCredentials {
    /// A provider for the server at `path` (a URL, or a socket path for [`HttpMode::Uds`]).
    /// `client_cert` (certificate, key; PEM) is presented over HTTPS; with `server_ca` set,
    /// only that CA is trusted. Setup problems are reported by [`CredentialProvider::lookup`].
    pub fn new(
        mode: HttpMode,
        path: String,
        timeout: Duration,
        client_cert: Option<(PathBuf, PathBuf)>,
        server_ca: Option<PathBuf>,
    ) -> Self {
        let setup = Self::setup(mode, &client_cert, &server_ca);
        HttpCredentials {
            mode,
            path,
            timeout,
            setup,
        }
    }

    fn setup(
        mode: HttpMode,
        client_cert: &Option<(PathBuf, PathBuf)>,
        server_ca: &Option<PathBuf>,
    ) -> std::result::Result<(OwnedRuntime, Transport), String> {
        let rt = OwnedRuntime::new(1, "obd-cred")
            .map_err(|e| format!("cannot start the credential client runtime: {e}"))?;
        let transport = match mode {
            HttpMode::Uds => Transport::Uds,
            HttpMode::Http | HttpMode::Https => {
                let mut b = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(format!("overlaybd-rs/{}", env!("CARGO_PKG_VERSION")));
                if mode == HttpMode::Https {
                    if let Some((cert, key)) = client_cert {
                        b = b.identity(
                            crate::registry::load_identity(cert, key).map_err(|e| e.to_string())?,
                        );
                    }
                    if let Some(ca) = server_ca {
                        b = b.tls_built_in_root_certs(false).add_root_certificate(
                            crate::registry::load_ca(ca).map_err(|e| e.to_string())?,
                        );
                    }
                }
                Transport::Http(b.build().map_err(|e| describe_reqwest(&e))?)
            }
        };
        Ok((rt, transport))
    }

    fn request_url(&self, blob_url: &str) -> Result<Url> {
        let base = match self.mode {
            HttpMode::Uds => "http://localhost/auth",
            _ => self.path.as_str(),
        };
        let mut u = Url::parse(base).map_err(|e| {
            Error::invalid_input(format!(
                "credential server URL {}: {e}",
                redact_str(&self.path)
            ))
        })?;
        u.query_pairs_mut().append_pair("remote_url", blob_url);
        Ok(u)
    }
}

async fn uds_get(socket: PathBuf, url: Url) -> std::result::Result<(u16, Vec<u8>), String> {
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let req = hyper::Request::get(target)
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, body))
}

async fn http_get(
    client: reqwest::Client,
    url: Url,
) -> std::result::Result<(u16, Vec<u8>), String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| describe_reqwest(&e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| describe_reqwest(&e))? {
        if body.len() + c.len() > MAX_BODY {
            return Err(format!("answer larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&c);
    }
    Ok((status, body))
}

impl CredentialProvider for HttpCredentials {
    fn lookup(&self, blob_url: &str) -> Result<Option<Credential>> {
        let who = self.describe();
        let (rt, transport) = self
            .setup
            .as_ref()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{who}: {e}")))?;
        let url = self.request_url(blob_url)?;
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match transport {
            Transport::Uds => Box::pin(uds_get(PathBuf::from(&self.path), url)),
            Transport::Http(c) => Box::pin(http_get(c.clone(), url)),
        };
        let timeout = self.timeout;
        let res = rt
            .run(
                async move { tokio::time::timeout(timeout, fut).await },
                timeout + Duration::from_secs(1),
            )
            .and_then(|r| r.ok());
        let (status, body) = match res {
            None => {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!("{who}: no answer within {timeout:?}"),
                ));
            }
            Some(Err(e)) => return Err(Error::new(ErrorKind::Io, format!("{who}: {e}"))),
            Some(Ok(r)) => r,
        };
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{who}: answered HTTP {status}"),
            ));
        }
        parse_answer(&body, &who)?.map_or(Ok(None), |a| Ok(a.lookup(blob_url)))
    }

    fn describe(&self) -> String {
        match self.mode {
            HttpMode::Uds => format!("credential server unix:{}", self.path),
            _ => format!("credential server {}", redact_str(&self.path)),
        }
    }
}

/// `{"success":true,"data":{"auths":{…}}}` → the auths (`None` when `data` is absent).
pub(crate) fn parse_answer(body: &[u8], who: &str) -> Result<Option<Auths>> {
    let bad = |m: String| Error::new(ErrorKind::InvalidInput, format!("{who}: {m}"));
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid JSON answer at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(root) = &doc else {
        return Err(bad("$: expected a JSON object".into()));
    };
    let trace = match root.get("traceId") {
        Some(Value::String(s)) => format!(" (traceId {s})"),
        _ => String::new(),
    };
    match root.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{who}: answered success=false{trace}"),
            ));
        }
        _ => return Err(bad(format!("$.success: expected true or false{trace}"))),
    }
    match root.get("data") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(d)) => Auths::parse(d.get("auths"), who, "$.data.auths").map(Some),
        Some(_) => Err(bad("$.data: expected an object".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let url = "https://reg.io/v2/ns/app/blobs/sha256:1";
        let a = parse_answer(
            br#"{"traceId":"t1","success":true,"data":{"auths":{"reg.io":{"username":"u","password":"p"},"reg.io/ns/app":{"auth":"YTpi"}}}}"#,
            "srv",
        )
        .unwrap()
        .unwrap();
        let c = a.lookup(url).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b"));
        let e = parse_answer(br#"{"traceId":"t2","success":false}"#, "srv").unwrap_err();
        assert!(e.to_string().contains("success=false (traceId t2)"), "{e}");
        let e = parse_answer(br#"{"success":true,"data":{"auths":{"x":1}}}"#, "srv").unwrap_err();
        assert!(e.to_string().contains(r#"$.data.auths["x"]"#), "{e}");
        assert!(
            parse_answer(br#"{"success":true}"#, "srv")
                .unwrap()
                .is_none()
        );
        assert!(parse_answer(b"<html>", "srv").is_err());
    }

    #[test]
    fn unreachable_servers_fail_fast_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let p = HttpCredentials::new(
            HttpMode::Uds,
            sock.display().to_string(),
            Duration::from_secs(1),
            None,
            None,
        );
        let e = p.lookup("https://reg.io/v2/a/blobs/sha256:1").unwrap_err();
        assert!(e.to_string().contains("none.sock"), "{e}");
        let p = HttpCredentials::new(
            HttpMode::Https,
            "https://127.0.0.1:1/creds".into(),
            Duration::from_secs(1),
            Some((dir.path().join("c.pem"), dir.path().join("k.pem"))),
            None,
        );
        let e = p.lookup("https://reg.io/v2/a/blobs/sha256:1").unwrap_err();
        assert!(e.to_string().contains("c.pem"), "{e}");
    }
}
