//! Prometheus metrics of overlaybd-rs.
//!
//! One process-wide set ([`Metrics::global`]) that the registry client, the blob cache,
//! background download, prefetch and the daemon all record into; the daemon serves it in
//! the text exposition format at `exporterConfig.uriPrefix`. Layer labels are blob digests,
//! so every device sharing a layer adds to the same series.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `obd_alive` | | 1 while the process serves |
//! | `obd_registry_fetched_bytes_total` | `layer` | bytes read from the registry |
//! | `obd_registry_requests_total` | `layer` | range GETs sent (retries included) |
//! | `obd_registry_retries_total` | `layer` | retried range GETs |
//! | `obd_cache_hits_total` / `obd_cache_misses_total` | `layer` | cache lookups per read |
//! | `obd_read_seconds` | `source` = `cache` / `registry` | read latency |
//! | `obd_cache_used_bytes` / `obd_cache_capacity_bytes` | | cache fill and limit |
//! | `obd_cache_evictions_total` / `obd_cache_evicted_bytes_total` | | LRU evictions |
//! | `obd_cache_heals_total` | `layer` | cached ranges found bad, dropped and refetched |
//! | `obd_download_bytes` / `obd_download_size_bytes` | `layer` | background download progress |
//! | `obd_download_completed_total` | `layer` | layers downloaded, verified and switched |
//! | `obd_errors_total` | `kind` | errors by kind (`timeout`, `http`, `auth`, `checksum`, …) |

#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set: `[(name, value)]`.
pub type Labels = Vec<(&'static str, String)>;

fn layer(digest: &str) -> Labels {
    vec![("layer", digest.to_string())]
}

/// Where a read was served from, for [`Metrics::observe_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The local blob cache.
    Cache,
    /// The registry (or a P2P proxy in front of it).
    Registry,
}

impl ReadSource {
    fn as_str(self) -> &'static str {
        match self {
            ReadSource::Cache => "cache",
            ReadSource::Registry => "registry",
        }
    }
}

/// Every metric of the process. Fields are public so callers record directly; the
/// helper methods cover the common cases.
pub struct Metrics {
    registry: Registry,
    /// `obd_alive`.
    pub alive: Gauge,
    /// `obd_registry_fetched_bytes_total{layer}`.
    pub fetched_bytes: Family<Labels, Counter>,
    /// `obd_registry_requests_total{layer}`.
    pub requests: Family<Labels, Counter>,
    /// `obd_registry_retries_total{layer}`.
    pub retries: Family<Labels, Counter>,
    /// `obd_cache_hits_total{layer}`.
    pub cache_hits: Family<Labels, Counter>,
    /// `obd_cache_misses_total{layer}`.
    pub cache_misses: Family<Labels, Counter>,
    /// `obd_read_seconds{source}`.
    pub read_seconds: Family<Labels, Histogram>,
    /// `obd_cache_used_bytes`.
    pub cache_used: Gauge,
    /// `obd_cache_capacity_bytes`.
    pub cache_capacity: Gauge,
    /// `obd_cache_evictions_total`.
    pub evictions: Counter,
    /// `obd_cache_evicted_bytes_total`.
    pub evicted_bytes: Counter,
    /// `obd_cache_heals_total{layer}`.
    pub heals: Family<Labels, Counter>,
    /// `obd_download_bytes{layer}`.
    pub download_bytes: Family<Labels, Gauge>,
    /// `obd_download_size_bytes{layer}`.
    pub download_size: Family<Labels, Gauge>,
    /// `obd_download_completed_total{layer}`.
    pub download_completed: Family<Labels, Counter>,
    /// `obd_errors_total{kind}`.
    pub errors: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    /// A fresh, empty set (tests; the daemon uses [`Metrics::global`]).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("obd");
        let alive = Gauge::default();
        let fetched_bytes = Family::<Labels, Counter>::default();
        let requests = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let cache_hits = Family::<Labels, Counter>::default();
        let cache_misses = Family::<Labels, Counter>::default();
        let read_seconds =
            Family::<Labels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let cache_used = Gauge::default();
        let cache_capacity = Gauge::default();
        let evictions = Counter::default();
        let evicted_bytes = Counter::default();
        let heals = Family::<Labels, Counter>::default();
        let download_bytes = Family::<Labels, Gauge>::default();
        let download_size = Family::<Labels, Gauge>::default();
        let download_completed = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let r = &mut registry;
        r.register("alive", "1 while the service runs", alive.clone());
        r.register(
            "registry_fetched_bytes",
            "Bytes read from the registry, per layer",
            fetched_bytes.clone(),
        );
        r.register(
            "registry_requests",
            "Range requests sent to the registry, per layer (retries included)",
            requests.clone(),
        );
        r.register(
            "registry_retries",
            "Registry range requests retried, per layer",
            retries.clone(),
        );
        r.register(
            "cache_hits",
            "Reads served by the cache",
            cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Reads that had to fetch from the registry",
            cache_misses.clone(),
        );
        r.register(
            "read_seconds",
            "Latency of remote-layer reads by source",
            read_seconds.clone(),
        );
        r.register(
            "cache_used_bytes",
            "Bytes held by the cache",
            cache_used.clone(),
        );
        r.register(
            "cache_capacity_bytes",
            "Cache limit in bytes",
            cache_capacity.clone(),
        );
        r.register(
            "cache_evictions",
            "Blobs evicted from the cache",
            evictions.clone(),
        );
        r.register(
            "cache_evicted_bytes",
            "Bytes evicted from the cache",
            evicted_bytes.clone(),
        );
        r.register(
            "cache_heals",
            "Cached ranges that failed verification and were refetched",
            heals.clone(),
        );
        r.register(
            "download_bytes",
            "Background download: bytes done, per layer",
            download_bytes.clone(),
        );
        r.register(
            "download_size_bytes",
            "Background download: layer size, per layer",
            download_size.clone(),
        );
        r.register(
            "download_completed",
            "Layers downloaded, verified and switched to the local file",
            download_completed.clone(),
        );
        r.register("errors", "Errors by kind", errors.clone());
        alive.set(1);
        Metrics {
            registry,
            alive,
            fetched_bytes,
            requests,
            retries,
            cache_hits,
            cache_misses,
            read_seconds,
            cache_used,
            cache_capacity,
            evictions,
            evicted_bytes,
            heals,
            download_bytes,
            download_size,
            download_completed,
            errors,
        }
    }

    /// The process-wide set.
    pub fn global() -> &'static Arc<Metrics> {
        static M: OnceLock<Arc<Metrics>> = OnceLock::new();
        M.get_or_init(|| Arc::new(Metrics::new()))
    }

    /// Count `n` bytes fetched from the registry for `digest`.
    pub fn add_fetched(&self, digest: &str, n: u64) {
        self.fetched_bytes.get_or_create(&layer(digest)).inc_by(n);
    }

    /// Count one range request (and whether it was a retry).
    pub fn add_request(&self, digest: &str, retry: bool) {
        self.requests.get_or_create(&layer(digest)).inc();
        if retry {
            self.retries.get_or_create(&layer(digest)).inc();
        }
    }

    /// Count a cache hit or miss for `digest`.
    pub fn add_lookup(&self, digest: &str, hit: bool) {
        let f = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        f.get_or_create(&layer(digest)).inc();
    }

    /// Record the latency of one read served from `source`.
    pub fn observe_read(&self, source: ReadSource, took: Duration) {
        self.read_seconds
            .get_or_create(&vec![("source", source.as_str().to_string())])
            .observe(took.as_secs_f64());
    }

    /// Count one error of `kind` (a short snake_case word).
    pub fn add_error(&self, kind: &str) {
        self.errors
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// Count one self-heal (bad cached range dropped and refetched) of `digest`.
    pub fn add_heal(&self, digest: &str) {
        self.heals.get_or_create(&layer(digest)).inc();
    }

    /// Record one eviction of `bytes`.
    pub fn add_eviction(&self, bytes: u64) {
        self.evictions.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// Set the background-download progress of `digest`.
    pub fn set_download(&self, digest: &str, done: u64, size: u64) {
        let l = layer(digest);
        self.download_bytes.get_or_create(&l).set(to_i64(done));
        self.download_size.get_or_create(&l).set(to_i64(size));
    }

    /// Set the cache fill gauges.
    pub fn set_cache_usage(&self, used: u64, capacity: u64) {
        self.cache_used.set(to_i64(used));
        self.cache_capacity.set(to_i64(capacity));
    }

    /// The text exposition (`text/plain; version=0.0.4` compatible OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_labels() {
        let m = Metrics::new();
        m.add_fetched("sha256:aa", 4096);
        m.add_request("sha256:aa", true);
        m.add_lookup("sha256:aa", true);
        m.add_lookup("sha256:aa", false);
        m.observe_read(ReadSource::Registry, Duration::from_millis(3));
        m.add_error("timeout");
        m.add_eviction(1 << 20);
        m.set_download("sha256:aa", 10, 20);
        m.set_cache_usage(5, 10);
        let t = m.encode();
        for want in [
            "obd_alive 1",
            "obd_registry_fetched_bytes_total{layer=\"sha256:aa\"} 4096",
            "obd_registry_retries_total{layer=\"sha256:aa\"} 1",
            "obd_cache_hits_total{layer=\"sha256:aa\"} 1",
            "obd_cache_misses_total{layer=\"sha256:aa\"} 1",
            "obd_read_seconds_count{source=\"registry\"} 1",
            "obd_errors_total{kind=\"timeout\"} 1",
            "obd_cache_evicted_bytes_total 1048576",
            "obd_download_bytes{layer=\"sha256:aa\"} 10",
            "obd_cache_capacity_bytes 10",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
