//! An HTTP/1.1 fault-injecting proxy in front of a registry (tokio + hyper).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::rt::OwnedRuntime;

/// Fault probabilities (each drawn per eligible request; at most one fault per request, in
/// the order 5xx, reset, truncate, stall, flip) and their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Answer 500/502/503 without forwarding.
    pub p_5xx: f64,
    /// Close the connection with a TCP RST mid-response (after the headers and 0..len body
    /// bytes; with no body: before any response).
    pub p_reset: f64,
    /// Send the headers with the full Content-Length, then fewer body bytes, then FIN.
    pub p_truncate: f64,
    /// Send nothing for `stall` (then forward normally); with `stall_mid_body`, send the
    /// headers and half the body, wait `stall`, then the rest.
    pub p_stall: f64,
    /// Forward with one byte of the body changed.
    pub p_flip: f64,
    /// Length of a stall.
    pub stall: Duration,
    /// Seed of the fault RNG (reseeded by every [`FaultProxy::set_faults`]).
    pub seed: u64,
    /// Only GETs with a `Range` header are eligible for faults.
    pub only_ranges: bool,
    /// Stall in the middle of the body instead of before the headers.
    pub stall_mid_body: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            p_5xx: 0.0,
            p_reset: 0.0,
            p_truncate: 0.0,
            p_stall: 0.0,
            p_flip: 0.0,
            stall: Duration::from_secs(60),
            seed: 0,
            only_ranges: false,
            stall_mid_body: false,
        }
    }
}

/// Counters of a [`FaultProxy`] since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests received (all methods).
    pub requests: u64,
    /// GET requests carrying a `Range` header.
    pub range_requests: u64,
    /// 307 redirects answered (redirect mode).
    pub redirects_sent: u64,
    /// Injected 5xx answers.
    pub faults_5xx: u64,
    /// Injected connection resets.
    pub faults_reset: u64,
    /// Injected truncated bodies.
    pub faults_truncate: u64,
    /// Injected stalls.
    pub faults_stall: u64,
    /// Injected flipped bytes.
    pub faults_flip: u64,
    /// Response body bytes sent to clients.
    pub bytes: u64,
}

impl ProxyStats {
    /// Total injected faults of every kind.
    pub fn faults(&self) -> u64 {
        self.faults_5xx
            + self.faults_reset
            + self.faults_truncate
            + self.faults_stall
            + self.faults_flip
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) range_requests: AtomicU64,
    pub(crate) redirects_sent: AtomicU64,
    pub(crate) faults_5xx: AtomicU64,
    pub(crate) faults_reset: AtomicU64,
    pub(crate) faults_truncate: AtomicU64,
    pub(crate) faults_stall: AtomicU64,
    pub(crate) faults_flip: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Shared {
    pub(crate) upstream: String,
    pub(crate) faults: Mutex<(Faults, StdRng)>,
    pub(crate) redirect: AtomicBool,
    pub(crate) counters: Counters,
}

/// The fault picked for one request, with its random parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    None,
    Status(u16),
    Reset(u64),
    Truncate(u64),
    Stall(Duration, bool),
    Flip(u64, u8),
}

impl Shared {
    /// Draws the fault for a request whose eligibility is known; positions are drawn as a
    /// fraction and scaled once the body length is known.
    pub(crate) fn draw(&self, range_get: bool) -> (Fault, f64) {
        let Ok(mut g) = self.faults.lock() else {
            return (Fault::None, 0.0);
        };
        let (f, rng) = &mut *g;
        if f.only_ranges && !range_get {
            return (Fault::None, 0.0);
        }
        let u: f64 = rng.random();
        let frac: f64 = rng.random();
        let mut acc = 0.0;
        let mut hit = |p: f64| {
            acc += p.max(0.0);
            u < acc
        };
        let fault = if hit(f.p_5xx) {
            Fault::Status([500, 502, 503][rng.random_range(0..3usize)])
        } else if hit(f.p_reset) {
            Fault::Reset(0)
        } else if hit(f.p_truncate) {
            Fault::Truncate(0)
        } else if hit(f.p_stall) {
            Fault::Stall(f.stall, f.stall_mid_body)
        } else if hit(f.p_flip) {
            Fault::Flip(0, rng.random_range(1..=255u8))
        } else {
            Fault::None
        };
        (fault, frac)
    }
}

/// An HTTP/1.1 proxy in front of an `http://` upstream that injects faults or redirects blob
/// GETs. All headers (Host, Authorization, Range, WWW-Authenticate, Location, Content-Range, ...)
/// are forwarded unchanged, so registry upload `Location`s point back at the proxy.
/// Drop stops it.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _rt: OwnedRuntime,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`). Faults off, redirects off.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_end_matches('/').to_string();
        if !upstream.starts_with("http://") {
            panic!("obd-testkit: FaultProxy upstream must be http://host:port, got {upstream:?}");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .unwrap_or_else(|e| panic!("obd-testkit: FaultProxy cannot bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("obd-testkit: FaultProxy local_addr: {e}"));
        let faults = Faults::default();
        let rng = StdRng::seed_from_u64(faults.seed);
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new((faults, rng)),
            redirect: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let rt = OwnedRuntime::new("fault-proxy");
        rt.handle()
            .spawn(crate::proxy_handler::accept_loop(listener, shared.clone()));
        FaultProxy {
            shared,
            addr,
            _rt: rt,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `<url>/v2/<repo>/blobs`.
    pub fn blob_url(&self, repo: &str) -> String {
        format!("{}/v2/{repo}/blobs", self.url())
    }

    /// The upstream URL.
    pub fn upstream(&self) -> String {
        self.shared.upstream.clone()
    }

    /// Replaces the fault settings (and reseeds the RNG with `f.seed`); takes effect for the
    /// next request.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut g) = self.shared.faults.lock() {
            let rng = StdRng::seed_from_u64(f.seed);
            *g = (f, rng);
        }
    }

    /// Redirect mode: blob GETs (`/v2/<name>/blobs/<digest>`) are answered
    /// `307 Location: <upstream>/v2/<name>/blobs/<digest>` without forwarding.
    pub fn set_redirect(&self, on: bool) {
        self.shared.redirect.store(on, Ordering::SeqCst);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            requests: g(&c.requests),
            range_requests: g(&c.range_requests),
            redirects_sent: g(&c.redirects_sent),
            faults_5xx: g(&c.faults_5xx),
            faults_reset: g(&c.faults_reset),
            faults_truncate: g(&c.faults_truncate),
            faults_stall: g(&c.faults_stall),
            faults_flip: g(&c.faults_flip),
            bytes: g(&c.bytes),
        }
    }
}
