//! A real `docker-registry` (distribution 2.8) on a free loopback port.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Skip;
use crate::certs::{TlsFiles, make_tls};
use crate::process::{ChildGuard, free_port, run_checked};
use crate::rt::off_runtime;
use crate::token::{self, TokenServer};

/// How long a present registry / token server may take to come up before the test fails.
/// Generous because CI runs many tests in parallel on 2 cores.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Response header (set through the registry's `http.headers`) identifying one instance, so
/// the readiness check never mistakes another test's registry for ours after a port race.
const INSTANCE_HEADER: &str = "X-Obd-Testkit-Instance";

/// Authentication the registry demands.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// htpasswd (bcrypt) basic auth with one user.
    Basic {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
    /// Bearer tokens from an embedded token server that knows one user.
    Token {
        /// User name.
        user: String,
        /// Password.
        pass: String,
        /// How long an issued token stays valid at the registry (`expires_in` too). Short
        /// values (e.g. 2 s) let tests see tokens expire mid-read.
        token_ttl: Duration,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, pass: <redacted> }}"),
            Auth::Token {
                user, token_ttl, ..
            } => write!(
                f,
                "Token {{ user: {user:?}, pass: <redacted>, token_ttl: {token_ttl:?} }}"
            ),
        }
    }
}

impl Auth {
    /// `Auth::Basic` with the given credentials.
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Basic {
            user: user.into(),
            pass: pass.into(),
        }
    }

    /// `Auth::Token` with the given credentials and token lifetime.
    pub fn token(user: &str, pass: &str, token_ttl: Duration) -> Auth {
        Auth::Token {
            user: user.into(),
            pass: pass.into(),
            token_ttl,
        }
    }

    fn credentials(&self) -> Option<(String, String)> {
        match self {
            Auth::None => None,
            Auth::Basic { user, pass } | Auth::Token { user, pass, .. } => {
                Some((user.clone(), pass.clone()))
            }
        }
    }
}

/// How to start a [`RegistryServer`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOpts {
    /// Authentication (default: none).
    pub auth: Auth,
    /// Serve HTTPS with a throw-away CA (see [`RegistryServer::ca_pem`]).
    pub tls: bool,
    /// Storage root to use (shared between instances); default: a fresh temp dir.
    pub storage: Option<PathBuf>,
}

/// A running `docker-registry`. Drop kills every child process it started (registry, token
/// server) and removes its temp dir (but not a caller-provided `storage`).
pub struct RegistryServer {
    // Field order is drop order: processes die before their files are removed.
    child: ChildGuard,
    pub(crate) token: Option<TokenServer>,
    port: u16,
    tls: Option<TlsFiles>,
    storage: PathBuf,
    log: PathBuf,
    pub(crate) auth: Auth,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryServer")
            .field("url", &self.url())
            .field("auth", &self.auth)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Ready(ChildGuard),
    PortTaken,
}

impl RegistryServer {
    /// Starts a registry. `Err(Skip)` when `docker-registry` (or `htpasswd` for Basic,
    /// `python3`/`openssl` for Token, `openssl` for TLS) is missing; panics when the
    /// registry is present but does not come up within [`READY_TIMEOUT`], with its log.
    pub fn start(opts: RegistryOpts) -> Result<RegistryServer, Skip> {
        off_runtime(move || Self::start_blocking(opts))
    }

    fn start_blocking(opts: RegistryOpts) -> Result<RegistryServer, Skip> {
        let bin = crate::docker_registry()?;
        let htpasswd_bin = match &opts.auth {
            Auth::Basic { .. } => Some(crate::find_binary("htpasswd")?),
            Auth::Token { .. } => {
                crate::find_binary("python3")?;
                crate::find_binary("openssl")?;
                None
            }
            Auth::None => None,
        };
        if opts.tls {
            crate::find_binary("openssl")?;
        }
        let dir = tempfile::Builder::new()
            .prefix("obd-testkit-registry-")
            .tempdir()
            .unwrap_or_else(|e| panic!("obd-testkit: cannot create a temp dir: {e}"));
        let storage = opts
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        std::fs::create_dir_all(&storage)
            .unwrap_or_else(|e| panic!("obd-testkit: cannot create {}: {e}", storage.display()));
        let tls = if opts.tls {
            Some(make_tls(dir.path())?)
        } else {
            None
        };
        let mut token = None;
        let auth_yaml = match &opts.auth {
            Auth::None => String::new(),
            Auth::Basic { user, pass } => {
                let file = dir.path().join("htpasswd");
                let bin = htpasswd_bin.unwrap_or_default();
                let line = run_checked(&bin, &["-Bbn", user, pass]);
                std::fs::write(&file, line)
                    .unwrap_or_else(|e| panic!("obd-testkit: write {}: {e}", file.display()));
                format!(
                    "auth:\n  htpasswd:\n    realm: obd-testkit\n    path: {}\n",
                    yaml_str(&file)
                )
            }
            Auth::Token {
                user,
                pass,
                token_ttl,
            } => {
                let ts = TokenServer::start(dir.path(), user, pass, *token_ttl, READY_TIMEOUT)?;
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    yaml_str(ts.realm()),
                    token::SERVICE,
                    token::ISSUER,
                    yaml_str(&ts.cert)
                );
                token = Some(ts);
                yaml
            }
        };
        let log = dir.path().join("registry.log");
        let cfg_path = dir.path().join("registry.yml");
        for _ in 0..8 {
            let port = free_port();
            let instance = uuid::Uuid::new_v4().simple().to_string();
            let cfg = config_yaml(port, &instance, &storage, tls.as_ref(), &auth_yaml);
            std::fs::write(&cfg_path, cfg)
                .unwrap_or_else(|e| panic!("obd-testkit: write {}: {e}", cfg_path.display()));
            let _ = std::fs::write(&log, "");
            let child = ChildGuard::spawn(
                "docker-registry",
                &bin,
                &[Path::new("serve"), &cfg_path],
                &log,
            )
            .unwrap_or_else(|e| panic!("obd-testkit: cannot start {}: {e}", bin.display()));
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}/v2/");
            let ca = tls.as_ref().map(|t| t.ca_pem.as_path());
            match wait_ready(child, &url, &instance, ca, &log, token.as_ref()) {
                Attempt::Ready(child) => {
                    return Ok(RegistryServer {
                        child,
                        token,
                        port,
                        tls,
                        storage,
                        log,
                        auth: opts.auth,
                        _dir: dir,
                    });
                }
                Attempt::PortTaken => continue,
            }
        }
        panic!("obd-testkit: docker-registry lost the port race 8 times in a row")
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<url>/v2/<repo>/blobs` (overlaybd's `repoBlobUrl`).
    pub fn blob_url(&self, repo: &str) -> String {
        format!("{}/v2/{repo}/blobs", self.url())
    }

    /// With TLS: the CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.storage.clone()
    }

    /// The registry log (and the token server's, if any), for assertions and debugging.
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(ts) = &self.token {
            text.push_str("\n--- token server ---\n");
            text.push_str(&ts.log());
        }
        text
    }

    /// The configured `(user, password)`, if the registry has auth.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.auth.credentials()
    }

    /// Token auth: the token endpoint (realm).
    pub fn token_realm(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.realm())
    }

    /// Token auth: how many tokens the token server issued to clients, NOT counting the
    /// tokens fetched by this crate's own push helpers. 0 without token auth.
    pub fn token_requests(&self) -> u64 {
        self.token.as_ref().map_or(0, |t| t.client_tokens())
    }

    /// Token auth: all tokens issued, including the push helpers' own.
    pub fn token_requests_total(&self) -> u64 {
        self.token.as_ref().map_or(0, |t| t.all_tokens())
    }

    /// A blocking HTTP client that trusts this registry's CA (if TLS), ignores proxy
    /// environment variables and has a 60 s timeout. It sends no credentials by itself.
    /// Do not use or drop it inside an async context.
    pub fn blocking_client(&self) -> reqwest::blocking::Client {
        build_client(
            self.tls.as_ref().map(|t| t.ca_pem.as_path()),
            Duration::from_secs(60),
        )
    }

    /// Process id of the registry (for debugging).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn yaml_str(s: impl AsRef<std::ffi::OsStr>) -> String {
    serde_json::Value::String(s.as_ref().to_string_lossy().into_owned()).to_string()
}

fn config_yaml(
    port: u16,
    instance: &str,
    storage: &Path,
    tls: Option<&TlsFiles>,
    auth_yaml: &str,
) -> String {
    let debug = std::env::var_os("OBD_TESTKIT_DEBUG").is_some();
    let (level, access_off) = if debug {
        ("info", false)
    } else {
        ("warn", true)
    };
    let mut y = format!(
        "version: 0.1\nlog:\n  level: {level}\n  accesslog:\n    disabled: {access_off}\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: {}\n  headers:\n    {INSTANCE_HEADER}: [{}]\n",
        yaml_str(storage),
        yaml_str(uuid::Uuid::new_v4().simple().to_string()),
        yaml_str(instance),
    );
    if let Some(t) = tls {
        y.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            yaml_str(&t.cert_pem),
            yaml_str(&t.key_pem)
        ));
    }
    y.push_str(auth_yaml);
    y
}

pub(crate) fn build_client(ca: Option<&Path>, timeout: Duration) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)
            .unwrap_or_else(|e| panic!("obd-testkit: cannot read {}: {e}", ca.display()));
        let cert = reqwest::Certificate::from_pem(&pem)
            .unwrap_or_else(|e| panic!("obd-testkit: bad CA {}: {e}", ca.display()));
        b = b.add_root_certificate(cert);
    }
    b.build()
        .unwrap_or_else(|e| panic!("obd-testkit: cannot build an HTTP client: {e}"))
}

fn wait_ready(
    mut child: ChildGuard,
    url: &str,
    instance: &str,
    ca: Option<&Path>,
    log: &Path,
    token: Option<&TokenServer>,
) -> Attempt {
    let client = build_client(ca, Duration::from_secs(5));
    let deadline = Instant::now() + READY_TIMEOUT;
    let log_text = || {
        let mut t = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(ts) = token {
            t.push_str("\n--- token server ---\n");
            t.push_str(&ts.log());
        }
        t
    };
    loop {
        if let Ok(resp) = client.get(url).send() {
            let ours = resp
                .headers()
                .get(INSTANCE_HEADER)
                .is_some_and(|v| v.as_bytes() == instance.as_bytes());
            let status = resp.status().as_u16();
            if ours && (status == 200 || status == 401) {
                return Attempt::Ready(child);
            }
            if ours {
                panic!(
                    "obd-testkit: GET {url} answered {status}; log:\n{}",
                    log_text()
                );
            }
        }
        if let Some(status) = child.exited() {
            let text = log_text();
            if text.contains("address already in use") {
                return Attempt::PortTaken;
            }
            panic!(
                "obd-testkit: docker-registry exited ({status}) before it was ready; log:\n{text}"
            );
        }
        if Instant::now() > deadline {
            drop(child);
            panic!(
                "obd-testkit: docker-registry not ready at {url} after {READY_TIMEOUT:?}; log:\n{}",
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
