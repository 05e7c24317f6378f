//! Test sources and helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use obd_cache::{BlobCache, CacheOptions};
use obd_core::{Error, ErrorKind, MemDevice, ReadAt, Result};
use rand::{Rng, SeedableRng};
use sha2::Digest;

/// A source over known bytes that counts its reads and can be slowed down or made to fail.
pub struct TestSource {
    inner: MemDevice,
    pub reads: AtomicUsize,
    pub bytes: AtomicU64,
    pub max_read: AtomicU64,
    pub delay_ms: AtomicU64,
    pub fail: AtomicBool,
}

impl TestSource {
    pub fn new(data: Vec<u8>) -> Arc<Self> {
        Arc::new(TestSource {
            inner: MemDevice::from_vec(data),
            reads: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            max_read: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            fail: AtomicBool::new(false),
        })
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

impl ReadAt for TestSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.max_read.fetch_max(buf.len() as u64, Ordering::SeqCst);
        let d = self.delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            std::thread::sleep(Duration::from_millis(d));
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(
                Error::new(ErrorKind::TimedOut, "injected source failure").at_offset(offset)
            );
        }
        self.inner.read_exact_at(buf, offset)
    }
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v[..]);
    v
}

/// The real `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A made-up digest number `n`.
pub fn fake_digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

pub fn open(dir: &Path, capacity: u64, refill: u32) -> Arc<BlobCache> {
    BlobCache::open(CacheOptions {
        dir: dir.to_path_buf(),
        capacity,
        refill,
    })
    .unwrap()
}

/// The value of a metric line `name{labels}` (exact prefix up to the value), or 0.
pub fn metric(line_prefix: &str) -> f64 {
    let text = obd_metrics::Metrics::global().encode();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn heals(digest: &str) -> f64 {
    metric(&format!("obd_cache_heals_total{{layer=\"{digest}\"}}"))
}

pub fn hits(digest: &str) -> f64 {
    metric(&format!("obd_cache_hits_total{{layer=\"{digest}\"}}"))
}

pub fn misses(digest: &str) -> f64 {
    metric(&format!("obd_cache_misses_total{{layer=\"{digest}\"}}"))
}

/// `sha256/<hex>.data` / `.meta` of a digest.
pub fn data_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("sha256").join(format!("{}.data", &digest[7..]))
}

pub fn meta_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("sha256").join(format!("{}.meta", &digest[7..]))
}

/// Allocated bytes of every file under `dir/sha256`.
pub fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.join("sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}
