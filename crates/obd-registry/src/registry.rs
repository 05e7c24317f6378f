//! [`Registry`]: the runtime, the HTTP clients, and `open_blob`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obd_core::{Error, ErrorKind, Result};
use reqwest::Url;

use crate::auth::AuthCache;
use crate::blob::{BlobState, RemoteBlobFile};
use crate::rt::OwnedRuntime;
use crate::util::{describe_reqwest, host_port, redact_str};
use crate::{HostOptions, RegistryOptions};

/// How long the outcome of the P2P proxy reachability check is reused.
const P2P_CHECK_TTL: Duration = Duration::from_secs(30);

/// State shared by every blob of a registry client (no runtime inside, so tasks can hold it).
pub(crate) struct Shared {
    pub opts: RegistryOptions,
    default_client: reqwest::Client,
    host_clients: HashMap<String, reqwest::Client>,
    pub auth: AuthCache,
    /// Normalised P2P prefix (`http://host:port/path`, no trailing `/`).
    pub p2p_prefix: Option<String>,
    p2p_check: Mutex<Option<(Instant, bool)>>,
    warned_insecure: Mutex<HashSet<String>>,
}

impl Shared {
    /// The client for `url`'s TLS settings (`host:port` entry, else `host`, else default).
    pub fn client_for(&self, url: &Url) -> &reqwest::Client {
        let host = url.host_str().unwrap_or("");
        let port = url.port_or_known_default().unwrap_or(0);
        self.host_clients
            .get(&format!("{host}:{port}"))
            .or_else(|| self.host_clients.get(host))
            .unwrap_or(&self.default_client)
    }

    fn host_options(&self, url: &Url) -> Option<&HostOptions> {
        let host = url.host_str().unwrap_or("");
        let port = url.port_or_known_default().unwrap_or(0);
        self.opts
            .hosts
            .get(&format!("{host}:{port}"))
            .or_else(|| self.opts.hosts.get(host))
    }
}

/// A registry client: a small tokio runtime (2 workers named `obd-registry`), reqwest
/// clients with connection reuse and HTTP/2 (one per distinct TLS setting), and the token
/// and auth-challenge caches shared by all blobs it opens. Cheap to clone; usable from any
/// thread, including from inside another tokio runtime.
#[derive(Clone)]
pub struct Registry {
    pub(crate) rt: Arc<OwnedRuntime>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("opts", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

/// Read a PEM certificate + key pair into a reqwest identity.
pub(crate) fn load_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity> {
    let mut pem =
        std::fs::read(cert).map_err(|e| Error::io("read client certificate", e).with_path(cert))?;
    let k = std::fs::read(key).map_err(|e| Error::io("read client key", e).with_path(key))?;
    pem.push(b'\n');
    pem.extend_from_slice(&k);
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        Error::invalid_input(format!(
            "client certificate {} / key {}: {}",
            cert.display(),
            key.display(),
            describe_reqwest(&e)
        ))
    })
}

/// Read a PEM CA certificate.
pub(crate) fn load_ca(path: &Path) -> Result<reqwest::Certificate> {
    let pem = std::fs::read(path).map_err(|e| Error::io("read CA file", e).with_path(path))?;
    reqwest::Certificate::from_pem(&pem).map_err(|e| {
        Error::invalid_input(format!(
            "CA file {}: not a PEM certificate: {}",
            path.display(),
            describe_reqwest(&e)
        ))
    })
}

fn build_client(opts: &RegistryOptions, host: &HostOptions) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout)
        .user_agent(opts.user_agent.clone())
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30));
    if let Some((cert, key)) = &opts.client_cert {
        b = b.identity(load_identity(cert, key)?);
    }
    if let Some(ca) = &host.ca_file {
        b = b.add_root_certificate(load_ca(ca)?);
    }
    if host.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot build the HTTP client: {}", describe_reqwest(&e)),
        )
    })
}

fn normalize_p2p(prefix: &str) -> Result<String> {
    let p = prefix.trim().trim_end_matches('/');
    let p = if p.contains("://") {
        p.to_string()
    } else {
        format!("http://{p}")
    };
    let u =
        Url::parse(&p).map_err(|e| Error::invalid_input(format!("p2p address {prefix:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(Error::invalid_input(format!(
            "p2p address {prefix:?}: expected http(s)://host[:port][/path]"
        )));
    }
    Ok(p)
}

impl Registry {
    /// A client with `opts`. Fails on unreadable certificate/CA files, a bad P2P address,
    /// or when the runtime cannot start.
    pub fn new(opts: RegistryOptions) -> Result<Registry> {
        let default_client = build_client(&opts, &HostOptions::default())?;
        let mut by_setting: HashMap<HostOptions, reqwest::Client> = HashMap::new();
        let mut host_clients = HashMap::new();
        for (host, ho) in &opts.hosts {
            if *ho == HostOptions::default() {
                continue;
            }
            let client = match by_setting.get(ho) {
                Some(c) => c.clone(),
                None => {
                    let c = build_client(&opts, ho)?;
                    by_setting.insert(ho.clone(), c.clone());
                    c
                }
            };
            // "host:443" style keys are matched against the URL's effective port.
            host_clients.insert(host.to_ascii_lowercase(), client);
        }
        let p2p_prefix = opts.p2p_prefix.as_deref().map(normalize_p2p).transpose()?;
        let rt = OwnedRuntime::new(2, "obd-registry")
            .map_err(|e| Error::io("start the registry runtime", e))?;
        Ok(Registry {
            rt: Arc::new(rt),
            shared: Arc::new(Shared {
                opts,
                default_client,
                host_clients,
                auth: AuthCache::default(),
                p2p_prefix,
                p2p_check: Mutex::new(None),
                warned_insecure: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &RegistryOptions {
        &self.shared.opts
    }

    /// Open the blob `<repo_blob_url>/<digest>` (`repo_blob_url` like
    /// `https://host/v2/ns/repo/blobs`). Without `size`, a `Range: bytes=0-0` probe learns
    /// it (and checks reachability and credentials now); with `size`, nothing is sent until
    /// the first read, so opening many layers costs nothing.
    pub fn open_blob(
        &self,
        repo_blob_url: &str,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Arc<RemoteBlobFile>> {
        let repo_key = repo_blob_url.trim_end_matches('/').to_string();
        let full = format!("{repo_key}/{digest}");
        let url = Url::parse(&full)
            .map_err(|e| Error::invalid_input(format!("blob URL {}: {e}", redact_str(&full))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::invalid_input(format!(
                "blob URL {}: expected http(s)://host/v2/<repo>/blobs",
                redact_str(&full)
            )));
        }
        if digest.is_empty() || digest.contains('/') || !digest.contains(':') {
            return Err(Error::invalid_input(format!(
                "blob digest {digest:?}: expected <algorithm>:<hex>"
            )));
        }
        self.warn_insecure(&url);
        let p2p = self.p2p_usable();
        let state = Arc::new(BlobState::new(
            self.shared.clone(),
            url,
            repo_key,
            digest.to_string(),
            AtomicBool::new(p2p),
        ));
        let size = match size {
            Some(s) => s,
            None => self.probe(&state)?,
        };
        Ok(Arc::new(RemoteBlobFile::new(self.rt.clone(), state, size)))
    }

    fn probe(&self, state: &Arc<BlobState>) -> Result<u64> {
        let timeout = self.shared.opts.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let st = state.clone();
        let res = self
            .rt
            .run(
                async move { st.probe_size(deadline).await },
                timeout + Duration::from_secs(2),
            )
            .unwrap_or_else(|| Err(state.timed_out("probing the blob size", 0, 0, None)));
        if let Err(e) = &res {
            tracing::warn!(layer = %state.digest, url = %state.display_url, error = %e, "opening remote blob failed");
        }
        res
    }

    fn warn_insecure(&self, url: &Url) {
        if self.shared.host_options(url).is_some_and(|h| h.insecure) {
            let host = host_port(url);
            let mut warned = self
                .shared
                .warned_insecure
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if warned.insert(host.clone()) {
                tracing::warn!(host = %host, "TLS certificate verification is DISABLED for this registry host (insecure)");
            }
        }
    }

    /// Whether data requests should go through the P2P proxy: it must accept a TCP
    /// connection (checked at most every 30 s).
    fn p2p_usable(&self) -> bool {
        let Some(prefix) = self.shared.p2p_prefix.clone() else {
            return false;
        };
        {
            let g = self
                .shared
                .p2p_check
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((at, ok)) = *g
                && at.elapsed() < P2P_CHECK_TTL
            {
                return ok;
            }
        }
        let Ok(u) = Url::parse(&prefix) else {
            return false;
        };
        let host = u
            .host_str()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let limit = self.shared.opts.connect_timeout;
        let ok = self
            .rt
            .run(
                async move {
                    tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port)))
                        .await
                        .is_ok_and(|r| r.is_ok())
                },
                limit + Duration::from_secs(1),
            )
            .unwrap_or(false);
        if ok {
            tracing::info!(proxy = %redact_str(&prefix), "using the P2P proxy for blob data");
        } else {
            tracing::warn!(proxy = %redact_str(&prefix), "P2P proxy unreachable; reading blobs directly from the registry");
        }
        *self
            .shared
            .p2p_check
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = RegistryOptions::default();
        o.hosts.insert(
            "reg.io".into(),
            HostOptions {
                insecure: false,
                ca_file: Some(dir.path().join("missing-ca.pem")),
            },
        );
        let e = Registry::new(o).unwrap_err();
        assert!(e.to_string().contains("missing-ca.pem"), "{e}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not pem").unwrap();
        let o = RegistryOptions {
            client_cert: Some((bad.clone(), bad.clone())),
            ..Default::default()
        };
        let e = Registry::new(o).unwrap_err();
        assert!(e.to_string().contains("bad.pem"), "{e}");
        let o = RegistryOptions {
            p2p_prefix: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(Registry::new(o).is_err());
        assert_eq!(
            normalize_p2p("localhost:19145/dadip2p/").unwrap(),
            "http://localhost:19145/dadip2p"
        );
    }

    #[test]
    fn open_validates_urls_and_digests() {
        let r = Registry::new(RegistryOptions::default()).unwrap();
        for (url, digest) in [
            ("not a url", "sha256:00"),
            ("ftp://h/v2/a/blobs", "sha256:00"),
            ("http://h/v2/a/blobs", "../etc"),
            ("http://h/v2/a/blobs", ""),
        ] {
            let e = r.open_blob(url, digest, Some(1)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url} {digest}: {e}");
        }
        let f = r
            .open_blob("http://h:1/v2/a/blobs/", "sha256:00", Some(5))
            .unwrap();
        assert_eq!(f.url(), "http://h:1/v2/a/blobs/sha256:00");
    }

    #[test]
    fn clients_are_picked_by_host_and_port() {
        let mut o = RegistryOptions::default();
        o.hosts.insert(
            "a.io".into(),
            HostOptions {
                insecure: true,
                ca_file: None,
            },
        );
        o.hosts.insert(
            "b.io:443".into(),
            HostOptions {
                insecure: true,
                ca_file: None,
            },
        );
        let r = Registry::new(o).unwrap();
        let s = &r.shared;
        let u = |x: &str| Url::parse(x).unwrap();
        assert!(s.host_options(&u("https://a.io:8443/x")).is_some());
        assert!(s.host_options(&u("https://b.io/x")).is_some());
        assert!(s.host_options(&u("https://b.io:444/x")).is_none());
        assert!(s.host_options(&u("https://c.io/x")).is_none());
    }
}
