//! The OCI registry client of overlaybd-rs: lazy, ranged reads of remote layer blobs.
//!
//! ```text
//!   Registry (tokio runtime "obd-registry", reqwest clients per TLS setting, token cache)
//!     └─ open_blob(repo_blob_url, digest, size) ─> RemoteBlobFile: obd_core::ReadAt
//!          read_exact_at(buf, off) ── Range GET(s) ≤ 8 MiB each, concurrently, one deadline
//! ```
//!
//! Behaviour, compared with upstream overlaybd's `registryfs_v2`:
//!
//! - **Bounded.** Every [`obd_core::ReadAt::read_exact_at`] has one overall deadline
//!   ([`RegistryOptions::timeout`]) that covers all retries; 429/5xx/connection errors,
//!   resets and truncated bodies are retried at most [`RegistryOptions::retries`] times with a
//!   doubling back-off starting at 20 ms; an attempt that receives nothing for
//!   [`RegistryOptions::stall_timeout`] is abandoned and retried. A failed read is an error
//!   (kind `TimedOut`, `PermissionDenied`, `NotFound` or `Io`), never a hang and never wrong
//!   bytes: answers are checked against the requested range (`Content-Range`, exact body
//!   length), and a server ignoring `Range` (200 with the whole blob) is handled by skipping
//!   to the offset (up to 32 MiB into the blob; beyond that it is an error).
//! - **Auth.** The first request is anonymous; a `401`/`403` challenge selects Bearer (token
//!   fetched with Basic credentials from the [`CredentialProvider`]s, cached per
//!   realm/service/scope until 90 % of `expires_in`, re-fetched once when the registry
//!   rejects it mid-read) or Basic (sent on every request). Credentials come from providers
//!   matched by the **longest** prefix of the blob URL (upstream takes the first key in
//!   JSON order).
//! - **TLS is verified** with the system roots; per host an extra CA ([`HostOptions::ca_file`])
//!   or, explicitly, no verification ([`HostOptions::insecure`]). An optional client
//!   certificate gives mTLS.
//! - **Redirects** (S3/CDN) are resolved by hand, cached per blob for
//!   [`RegistryOptions::redirect_ttl`], read without the `Authorization` header, and dropped
//!   on any failure.
//! - **P2P**: with [`RegistryOptions::p2p_prefix`], data requests go to
//!   `<prefix>/<blob URL>` when the proxy accepted a TCP connection at open, falling back to
//!   direct access otherwise (and after a connection failure to the proxy).
//! - **Proxies**: reqwest honours `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` from
//!   the environment (upstream ignores them). Loopback registries need `NO_PROXY=127.0.0.1,localhost`
//!   when a proxy is set.
//! - **Secrets** (passwords, tokens, `Authorization` headers, query strings of redirect
//!   URLs) never appear in logs, errors or `Debug` output.
//!
//! Metrics go to [`obd_metrics::Metrics::global`]: a request (and retry) count and fetched
//! bytes per layer, read latency (`source="registry"`) per `read_exact_at`, and errors by
//! kind (`timeout`, `http_5xx`, `http_4xx`, `auth`, `connect`, `truncated`, `not_found`) per
//! failed attempt.

#![forbid(unsafe_code)]

mod auth;
mod blob;
mod challenge;
mod credentials;
mod fetch;
mod http_credentials;
mod registry;
mod response;
mod rt;
mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use blob::RemoteBlobFile;
pub use credentials::{Credential, CredentialProvider, FileCredentials, docker_config_path};
pub use http_credentials::{HttpCredentials, HttpMode};
pub use registry::Registry;

/// Largest single range request; bigger reads are split and issued concurrently.
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// Options of a [`Registry`] (global config `overlaybd.json` keys in brackets).
#[derive(Clone)]
pub struct RegistryOptions {
    /// One overall deadline per `read_exact_at` call (and per size probe), retries included.
    /// Default 30 s.
    pub timeout: Duration,
    /// TCP + TLS connect limit per connection attempt. Default 5 s.
    pub connect_timeout: Duration,
    /// An attempt that gets no response headers or no body bytes for this long is abandoned
    /// (and retried while the deadline allows). Default 10 s.
    pub stall_timeout: Duration,
    /// Extra attempts after the first (default 3). Back-off 20 ms, doubling, capped by the
    /// deadline. A token refresh after a mid-read `401` is not counted.
    pub retries: u32,
    /// `User-Agent` header (`userAgent`). Default `overlaybd-rs/<version>`.
    pub user_agent: String,
    /// Client certificate and key, PEM (`certConfig.certFile` / `keyFile`): mTLS to registries.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Per-host TLS settings, keyed `"host"` or `"host:port"` (`host:port` wins).
    pub hosts: HashMap<String, HostOptions>,
    /// P2P proxy prefix (`p2pConfig.address` when `p2pConfig.enable`): data requests go to
    /// `<prefix>/<blob URL>` if a TCP connect to the prefix succeeds at open.
    pub p2p_prefix: Option<String>,
    /// Credential providers, consulted in order; the first that returns `Some` wins.
    pub credentials: Vec<Arc<dyn CredentialProvider>>,
    /// How long a redirect `Location` is reused for data reads of a blob. Default 300 s.
    pub redirect_ttl: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            retries: 3,
            user_agent: format!("overlaybd-rs/{}", env!("CARGO_PKG_VERSION")),
            client_cert: None,
            hosts: HashMap::new(),
            p2p_prefix: None,
            credentials: Vec::new(),
            redirect_ttl: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers: Vec<String> = self.credentials.iter().map(|c| c.describe()).collect();
        f.debug_struct("RegistryOptions")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("retries", &self.retries)
            .field("user_agent", &self.user_agent)
            .field("client_cert", &self.client_cert)
            .field("hosts", &self.hosts)
            .field("p2p_prefix", &self.p2p_prefix)
            .field("credentials", &providers)
            .field("redirect_ttl", &self.redirect_ttl)
            .finish()
    }
}

/// TLS settings of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HostOptions {
    /// Skip TLS certificate verification for this host only (a warning is logged at open).
    pub insecure: bool,
    /// An extra trusted CA certificate (PEM) for this host, on top of the system roots.
    pub ca_file: Option<PathBuf>,
}
