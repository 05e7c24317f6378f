//! Helpers shared by the integration tests: registry start-up with SKIP handling, random
//! data, credential files, log capture, and a small forwarding HTTP server standing in for
//! a P2P proxy.
#![allow(dead_code)]

pub mod cred_server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use obd_registry::RegistryOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `let x = skip_on_err!(RegistryServer::start(..));` – prints `SKIP: …` and returns.
#[macro_export]
macro_rules! skip_on_err {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(skip) => {
                eprintln!("SKIP: {}", skip.0);
                return;
            }
        }
    };
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

/// Options with test-friendly limits.
pub fn opts() -> RegistryOptions {
    RegistryOptions {
        timeout: Duration::from_secs(15),
        ..Default::default()
    }
}

/// Write a docker-style credential file atomically (write + rename).
pub fn write_cred_file(path: &Path, key: &str, user: &str, pass: &str) {
    let json = serde_json::json!({ "auths": { key: { "username": user, "password": pass } } });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture every tracing event (and `log` record) of the process at TRACE level into a
/// buffer; returns the buffer (installed once per test binary).
pub fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = BufWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        buf
    })
    .clone()
}

/// A forwarding HTTP server: `GET /<prefix>/<absolute URL>` is sent on to that URL (with
/// the client's `Range` and `Authorization`), and the answer is passed back. Stands in for
/// a P2P proxy (dadi-p2proxy style), and with `strip_range` for a server ignoring `Range`.
pub struct Forwarder {
    addr: std::net::SocketAddr,
    prefix: String,
    hits: Arc<AtomicU64>,
    rt: Option<tokio::runtime::Runtime>,
}

struct FwdState {
    prefix: String,
    strip_range: bool,
    /// The request with this number (1-based) is forwarded without its `Authorization`,
    /// so the registry answers 401 as if the token had been revoked.
    drop_auth_on_hit: Option<u64>,
    hits: Arc<AtomicU64>,
    client: reqwest::Client,
}

async fn forward(
    axum::extract::State(st): axum::extract::State<Arc<FwdState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::header::{
        AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE, WWW_AUTHENTICATE,
    };
    let hit = st.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let status = |code: u16| {
        axum::response::Response::builder()
            .status(code)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let Some(target) = pq.strip_prefix(&format!("/{}/", st.prefix)) else {
        return status(404);
    };
    let mut fwd = st.client.get(target);
    if let Some(v) = req
        .headers()
        .get(AUTHORIZATION)
        .filter(|_| st.drop_auth_on_hit != Some(hit))
    {
        fwd = fwd.header(AUTHORIZATION, v.clone());
    }
    if let Some(v) = req.headers().get(RANGE).filter(|_| !st.strip_range) {
        fwd = fwd.header(RANGE, v.clone());
    }
    let Ok(resp) = fwd.send().await else {
        return status(502);
    };
    let mut b = axum::response::Response::builder().status(resp.status().as_u16());
    for name in [CONTENT_RANGE, CONTENT_LENGTH, WWW_AUTHENTICATE, LOCATION] {
        for v in resp.headers().get_all(&name) {
            b = b.header(&name, v.clone());
        }
    }
    let Ok(body) = resp.bytes().await else {
        return status(502);
    };
    b.body(axum::body::Body::from(body)).unwrap()
}

impl Forwarder {
    /// Start on a free loopback port; requests must start with `/<prefix>/`.
    pub fn start(prefix: &str, strip_range: bool) -> Forwarder {
        Self::start_with(prefix, strip_range, None)
    }

    /// Like [`Forwarder::start`]; request number `drop_auth_on_hit` loses its credentials.
    pub fn start_with(prefix: &str, strip_range: bool, drop_auth_on_hit: Option<u64>) -> Forwarder {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let st = Arc::new(FwdState {
            prefix: prefix.to_string(),
            strip_range,
            drop_auth_on_hit,
            hits: hits.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(forward).with_state(st);
            let _ = axum::serve(l, app).await;
        });
        Forwarder {
            addr,
            prefix: prefix.to_string(),
            hits,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT/<prefix>` (the value of `p2p_prefix`).
    pub fn url(&self) -> String {
        format!("http://{}/{}", self.addr, self.prefix)
    }

    /// Requests received.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A loopback address nobody listens on.
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

/// A temp file path inside `dir`.
pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
