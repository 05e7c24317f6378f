//! The shared on-disk blob cache of overlaybd-rs (`cacheConfig` of `overlaybd.json`).
//!
//! One [`BlobCache`] per daemon caches the raw bytes of remote blobs (layers), identified by
//! digest, for every device. A [`CachedBlob`] is a [`ReadAt`] over one blob: reads are served
//! from local files when the bytes are cached **and verify**, and otherwise fetched from the
//! blob's source (the registry client) in `refill`-sized aligned units, which are then
//! written to the cache. The cache knows nothing about the formats inside the blobs.
//!
//! # On-disk layout
//!
//! ```text
//! <cacheDir>/
//!   .lock                    flock'ed by the running cache (offline gc/clear refuse while held)
//!   sha256/<hex>.data        sparse copy of the blob: byte i of the blob at offset i
//!   sha256/<hex>.meta        header + one record per refill unit (see below)
//!   sha256:<hex>             side-loaded complete blob (upstream's naming), adopted on use
//!   sha256/<hex>             side-loaded complete blob (our naming), adopted on use
//!   *.rejected               side-loaded file whose SHA-256 or size did not match
//! ```
//!
//! The meta file (format in [`meta`]) has a 96-byte header (magic `OBDCACHE`, version,
//! unit size, blob size, last use in Unix ms, raw digest, CRC-32C of the header) followed
//! by one record per unit: a state word, a check word (CRC-32C over the unit index, the
//! state and the CRCs) and the CRC-32C of every 4 KiB block of the unit. A fresh meta is
//! sparse zeros after the header (every unit absent). Each blob keeps the unit size it was
//! created with, so changing `refillSize` does not invalidate blobs cached before.
//!
//! # Guarantees
//!
//! - **Never wrong bytes.** Every cached read verifies the CRC-32C of each 4 KiB block it
//!   touches (hardware CRC; a 4 KiB read checks one CRC). A block that fails (bit flips, a
//!   truncated file, a unit whose data was lost in a power cut) drops its unit
//!   (`obd_cache_heals_total`), which is refetched once and served; if the fresh bytes
//!   cannot be written and read back intact, they are served from memory without caching.
//!   There is no retry loop: each read ends after a bounded number of steps.
//! - **Crash safety without fsync.** A unit's data is written first, then its record. A
//!   record without its data fails verification and is refetched; a torn record fails its
//!   check word and counts as absent; a damaged header discards the blob's cache.
//! - **Files deleted, replaced or truncated under a running cache** are noticed within about
//!   a second (or on the next anomaly): the blob's files are recreated and reads go on.
//! - **Single flight.** Concurrent readers of the same missing units wait for one source
//!   read; contiguous missing units are fetched in one source read of at most 32 MiB. A
//!   failed fetch wakes the waiters with its error and leaves the units absent.
//! - **Capacity.** Bytes are reserved before they are written, so the cache never holds
//!   more than `capacity` bytes of blob data (meta files, ~0.1 %, are not counted). When
//!   full, whole blobs are evicted least recently used first (open blobs drop their data and
//!   keep working); if the blob being filled is the only one, its own oldest units go. If
//!   `capacity < refill` nothing is cached. Eviction walks each blob at most once.
//! - **Write errors (ENOSPC, EIO)** never fail a read: the fetched bytes are served, one
//!   warning is logged, `obd_errors_total{kind="cache_enospc"|"cache_io"}` counts them, and
//!   writing is retried after 10 s or after the next eviction.
//! - **Restart keeps the cache**; `last_used` is persisted at most every 10 s and on close.
//! - **Side-loading.** A complete blob dropped in as `sha256:<hex>` or `sha256/<hex>` is
//!   checked (size and SHA-256) the first time its digest is opened with [`BlobCache::blob`]
//!   and then moved into place with every unit present; a mismatch is renamed to
//!   `<name>.rejected` (kept by gc, removed by clear) and the blob is fetched normally.
//! - **Offline tools.** [`scan_dir`] lists without locking; [`gc_dir`] and [`clear_dir`]
//!   take the directory lock, so they refuse to run next to a live cache.
//! - **Memory.** An open blob keeps 4 bytes per 4 KiB (1 MiB per GiB of blob) of CRCs plus
//!   a few bytes per unit.
//! - **Priority.** A background reader (see [`obd_core::priority`]) waits up to 500 ms for
//!   demand reads to finish before claiming units to fetch, never while holding a claim.
//!
//! [`ReadAt`]: obd_core::ReadAt

#![forbid(unsafe_code)]

mod blob;
mod cache;
mod files;
mod fill;
#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod maintain;
pub mod meta;
mod read;
mod scan;
mod sideload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

pub use blob::CachedBlob;
pub use cache::BlobCache;
pub use scan::{clear_dir, gc_dir, scan_dir};

/// Default fill unit (`cacheConfig.refillSize`): 256 KiB.
pub const DEFAULT_REFILL: u32 = 262_144;

/// How to open a [`BlobCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// The cache directory (`cacheConfig.cacheDir`); created if missing.
    pub dir: PathBuf,
    /// Most bytes of blob data kept (`cacheConfig.cacheSizeGB` in bytes).
    pub capacity: u64,
    /// Fill unit in bytes (`cacheConfig.refillSize`, default [`DEFAULT_REFILL`]): a power
    /// of two from 4096 to 1 GiB, else [`BlobCache::open`] fails with `InvalidInput`.
    pub refill: u32,
}

impl CacheOptions {
    /// Options with the default refill size.
    pub fn new(dir: impl Into<PathBuf>, capacity: u64) -> Self {
        CacheOptions {
            dir: dir.into(),
            capacity,
            refill: DEFAULT_REFILL,
        }
    }
}

/// One blob on disk, as listed by [`BlobCache::list`] and [`scan_dir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Bytes of the blob held by the cache.
    pub cached_bytes: u64,
    /// Whether the whole blob is cached.
    pub complete: bool,
    /// Whether a device has it open now.
    pub open: bool,
    /// Last read (persisted with a resolution of about 10 s).
    pub last_used: SystemTime,
}

/// What [`BlobCache::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Blobs whose cached data was dropped.
    pub evicted_blobs: usize,
    /// Bytes of cached data dropped.
    pub freed_bytes: u64,
    /// Orphaned files removed (data without meta, meta without data, stray temporaries).
    pub removed_orphans: usize,
}

/// Fill figures of a [`BlobCache`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheUsage {
    /// Bytes of blob data cached or reserved for fills in progress.
    pub used: u64,
    /// The limit.
    pub capacity: u64,
    /// Blobs on disk (open or not).
    pub blobs: usize,
    /// Default fill unit.
    pub refill: u32,
}

/// Lock a mutex, ignoring poisoning (state is kept consistent at every unlock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A cache-wide increasing counter ordering unit accesses.
pub(crate) fn tick() -> u64 {
    static TICK: AtomicU64 = AtomicU64::new(1);
    TICK.fetch_add(1, Ordering::Relaxed)
}
