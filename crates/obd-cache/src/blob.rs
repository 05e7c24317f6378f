//! One cached blob: its in-memory unit table and the state changes on it (open, evict,
//! invalidate, reset, recreate). The read path is in `read.rs`, filling in `fill.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obd_core::{Error, ReadAt, Result};
use obd_metrics::Metrics;

use crate::files::Files;
use crate::fill::Flight;
use crate::meta::{self, BLOCK, MetaHeader};
use crate::{BlobCache, layout, lock, now_ms, scan};

/// State of one refill unit.
pub(crate) enum Slot {
    /// Not cached.
    Absent,
    /// Cached; its blocks' CRCs are in [`State::crcs`].
    Present,
    /// Being fetched; readers wait on the flight.
    Fetching(Arc<Flight>),
}

/// Everything guarded by the blob's lock.
pub(crate) struct State {
    pub slots: Vec<Slot>,
    /// Bumped whenever a unit is dropped or its in-flight fill must not be published.
    pub epochs: Vec<u32>,
    /// Last access of each unit (cache-wide tick), for dropping a blob's own oldest units.
    pub ticks: Vec<u64>,
    /// CRC-32C of every 4 KiB block (valid for present units).
    pub crcs: Vec<u32>,
    /// The files, or `None` while they cannot be created (caching paused for this blob).
    pub files: Option<Arc<Files>>,
    /// When to try creating the files again.
    pub retry_files_at: Option<Instant>,
    /// Bytes of present units.
    pub cached: u64,
}

/// A blob of the cache: reads are served from the local files when cached and verified,
/// else fetched from the source in refill units. See the crate docs.
pub struct CachedBlob {
    pub(crate) cache: Arc<BlobCache>,
    pub(crate) digest: String,
    pub(crate) hex: String,
    pub(crate) source: Arc<dyn ReadAt>,
    pub(crate) size: u64,
    pub(crate) refill: u32,
    pub(crate) unit: u64,
    pub(crate) state: Mutex<State>,
    /// Shared with the cache index (current even while the blob is being dropped).
    pub(crate) cached: Arc<AtomicU64>,
    pub(crate) last_used_ms: Arc<AtomicU64>,
    persisted_s: AtomicU64,
    pub(crate) last_check_ms: AtomicU64,
    last_heal_warn_ms: AtomicU64,
}

impl std::fmt::Debug for CachedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("refill", &self.refill)
            .field("cached", &self.cached.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How often the files are checked for deletion or truncation during reads.
const CHECK_EVERY_MS: u64 = 1000;
/// How often `last_used` is written to the meta header at most.
const PERSIST_EVERY_S: u64 = 10;
/// Retry creating files (after an error) this long after.
const RETRY_FILES: Duration = Duration::from_secs(10);

impl CachedBlob {
    /// Open `hex` from disk (when `existing`) or create it; called with the index locked.
    pub(crate) fn open_locked(
        cache: &Arc<BlobCache>,
        hex: &str,
        source: Arc<dyn ReadAt>,
        existing: bool,
        cached: Arc<AtomicU64>,
        last_used_ms: Arc<AtomicU64>,
    ) -> Arc<CachedBlob> {
        let size = source.size();
        let dir = cache.dir();
        let mut loaded = None;
        if existing {
            match load(dir, hex, size) {
                Ok(l) => loaded = Some(l),
                Err(e) => tracing::warn!(
                    digest = %format!("sha256:{hex}"), error = %e,
                    "cached copy of the blob is unusable; rebuilding its cache"
                ),
            }
        }
        let refill = loaded
            .as_ref()
            .map(|(_, p, _)| p.header.refill)
            .unwrap_or(cache.refill);
        let unit = u64::from(refill);
        let units = meta::unit_count(size, unit) as usize;
        let mut st = State {
            slots: (0..units).map(|_| Slot::Absent).collect(),
            epochs: vec![0; units],
            ticks: vec![0; units],
            crcs: vec![0; meta::block_count(size) as usize],
            files: None,
            retry_files_at: None,
            cached: 0,
        };
        let now = now_ms();
        let blob_header = |refill| MetaHeader {
            digest: layout::digest_bytes(hex),
            size,
            refill,
            last_used_ms: now,
        };
        match loaded {
            Some((files, parsed, data_len)) => {
                let bpu = unit / BLOCK;
                for (u, crcs) in parsed.present {
                    let (start, end) = unit_bounds(u, unit, size);
                    let b0 = (u * bpu) as usize;
                    let ok = end <= data_len
                        && crcs.len() as u64 == (end - start).div_ceil(BLOCK)
                        && st.crcs.len() >= b0 + crcs.len();
                    if let (true, Some(slot)) = (ok, st.slots.get_mut(u as usize)) {
                        *slot = Slot::Present;
                        st.crcs[b0..b0 + crcs.len()].copy_from_slice(&crcs);
                        st.cached += end - start;
                    }
                }
                st.files = Some(Arc::new(files));
            }
            None => match Files::create(dir, hex, &blob_header(refill)) {
                Ok(f) => st.files = Some(Arc::new(f)),
                Err(e) => {
                    cache.note_write_error(&e);
                    st.retry_files_at = Some(Instant::now() + RETRY_FILES);
                }
            },
        }
        cached.store(st.cached, Ordering::Release);
        last_used_ms.store(now, Ordering::Relaxed);
        Arc::new(CachedBlob {
            cache: cache.clone(),
            digest: format!("sha256:{hex}"),
            hex: hex.to_string(),
            source,
            size,
            refill,
            unit,
            state: Mutex::new(st),
            cached,
            last_used_ms,
            persisted_s: AtomicU64::new(now / 1000),
            last_check_ms: AtomicU64::new(now),
            last_heal_warn_ms: AtomicU64::new(0),
        })
    }

    /// Byte range of unit `u`.
    pub(crate) fn unit_bounds(&self, u: u64) -> (u64, u64) {
        unit_bounds(u, self.unit, self.size)
    }

    /// Blocks (index range into [`State::crcs`]) of unit `u`.
    pub(crate) fn unit_blocks(&self, u: u64) -> std::ops::Range<usize> {
        let (s, e) = self.unit_bounds(u);
        (s / BLOCK) as usize..e.div_ceil(BLOCK) as usize
    }

    fn header(&self) -> MetaHeader {
        MetaHeader {
            digest: layout::digest_bytes(&self.hex),
            size: self.size,
            refill: self.refill,
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
        }
    }

    /// Record a use; writes `last_used` to the meta at most every 10 s.
    pub(crate) fn touch(&self) {
        let now = now_ms();
        self.last_used_ms.store(now, Ordering::Relaxed);
        let s = now / 1000;
        let prev = self.persisted_s.load(Ordering::Relaxed);
        if s >= prev + PERSIST_EVERY_S
            && self
                .persisted_s
                .compare_exchange(prev, s, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.persist_header();
        }
    }

    fn persist_header(&self) {
        let files = lock(&self.state).files.clone();
        if let Some(f) = files {
            // Best effort: a lost update only makes the blob look older after a restart.
            let _ = f.write_meta(&meta::encode_header(&self.header()), 0);
        }
    }

    /// Mark unit `u` absent (with `st` locked); returns the bytes freed.
    pub(crate) fn drop_unit(&self, st: &mut State, u: usize) -> u64 {
        if !matches!(st.slots.get(u), Some(Slot::Present)) {
            return 0;
        }
        let (s, e) = self.unit_bounds(u as u64);
        st.slots[u] = Slot::Absent;
        st.epochs[u] = st.epochs[u].wrapping_add(1);
        st.cached -= e - s;
        self.cached.store(st.cached, Ordering::Relaxed);
        self.cache.release(e - s);
        if let Some(f) = &st.files {
            let rec = vec![0u8; meta::record_len(self.refill)];
            let _ = f.write_meta(&rec, meta::record_offset(self.refill, u as u64));
            f.punch(s, e - s);
        }
        e - s
    }

    /// Drop every present unit (LRU eviction of the whole blob); fills in flight go on.
    pub(crate) fn evict_all(&self) -> u64 {
        let mut st = lock(&self.state);
        let fetching = st.slots.iter().any(|s| matches!(s, Slot::Fetching(_)));
        let mut freed = 0;
        for u in 0..st.slots.len() {
            if matches!(st.slots[u], Slot::Present) {
                let (s, e) = self.unit_bounds(u as u64);
                st.slots[u] = Slot::Absent;
                st.epochs[u] = st.epochs[u].wrapping_add(1);
                freed += e - s;
                if fetching && let Some(f) = &st.files {
                    f.punch(s, e - s);
                }
            }
        }
        st.cached -= freed;
        self.cached.store(st.cached, Ordering::Relaxed);
        self.cache.release(freed);
        if let Some(f) = &st.files {
            let _ = f.reset_meta(&self.header());
            if !fetching {
                let _ = f.truncate_data();
            }
        }
        freed
    }

    /// Drop everything, including fills in flight (they are served but not published).
    pub(crate) fn reset_all(&self) -> u64 {
        let mut st = lock(&self.state);
        let freed = self.forget_all(&mut st);
        if let Some(f) = &st.files {
            let _ = f.reset_meta(&self.header());
            let _ = f.truncate_data();
        }
        freed
    }

    fn forget_all(&self, st: &mut State) -> u64 {
        let mut freed = 0;
        for u in 0..st.slots.len() {
            st.epochs[u] = st.epochs[u].wrapping_add(1);
            if matches!(st.slots[u], Slot::Present) {
                st.slots[u] = Slot::Absent;
                let (s, e) = self.unit_bounds(u as u64);
                freed += e - s;
            }
        }
        st.cached -= freed;
        self.cached.store(st.cached, Ordering::Relaxed);
        self.cache.release(freed);
        freed
    }

    /// Drop this blob's least recently used units until `need` bytes are freed (or none
    /// is left); fills in flight are kept. Returns the bytes freed.
    pub(crate) fn evict_own_lru(&self, need: u64) -> u64 {
        let mut st = lock(&self.state);
        let mut present: Vec<(u64, usize)> = (0..st.slots.len())
            .filter(|&u| matches!(st.slots[u], Slot::Present))
            .map(|u| (st.ticks[u], u))
            .collect();
        present.sort_unstable();
        let mut freed = 0;
        for (_, u) in present {
            if freed >= need {
                break;
            }
            freed += self.drop_unit(&mut st, u);
        }
        freed
    }

    /// Replace lost or damaged files by new empty ones (called with `st` locked).
    fn recreate(&self, st: &mut State, why: &str) {
        let freed = self.forget_all(st);
        if st.files.is_some() {
            tracing::warn!(
                digest = %self.digest, dropped_bytes = freed, reason = why,
                "cache files of the blob were lost or damaged; recreating them"
            );
        } else {
            tracing::debug!(digest = %self.digest, reason = why, "retrying to create cache files");
        }
        match Files::create(self.cache.dir(), &self.hex, &self.header()) {
            Ok(f) => {
                st.files = Some(Arc::new(f));
                st.retry_files_at = None;
            }
            Err(e) => {
                st.files = None;
                st.retry_files_at = Some(Instant::now() + RETRY_FILES);
                self.cache.note_write_error(&e);
            }
        }
        self.cache.publish_usage();
    }

    /// Check at most every second (or now, when `force`) that the files still exist at
    /// their paths and are not shorter than the cached data; repair what is not. Returns
    /// whether cached units were dropped.
    pub(crate) fn check_files(&self, force: bool) -> bool {
        let now = now_ms();
        let prev = self.last_check_ms.load(Ordering::Relaxed);
        if !force
            && (now < prev + CHECK_EVERY_MS
                || self
                    .last_check_ms
                    .compare_exchange(prev, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err())
        {
            return false;
        }
        self.last_check_ms.store(now, Ordering::Relaxed);
        let mut st = lock(&self.state);
        let Some(files) = st.files.clone() else {
            if st.retry_files_at.is_none_or(|t| Instant::now() >= t) {
                self.recreate(&mut st, "files could not be created before");
            }
            return false;
        };
        if !files.intact() {
            let had = st.cached > 0;
            self.recreate(&mut st, "data or meta file deleted or replaced");
            return had;
        }
        let len = files.data_len();
        let mut dropped = 0;
        for u in 0..st.slots.len() {
            if matches!(st.slots[u], Slot::Present) && self.unit_bounds(u as u64).1 > len {
                dropped += 1;
                self.drop_unit(&mut st, u);
            }
        }
        if dropped > 0 {
            Metrics::global().add_heal(&self.digest);
            tracing::warn!(
                digest = %self.digest, path = %files.data_path.display(), units = dropped,
                "cache data file is shorter than its cached units (truncated?); refetching them"
            );
        }
        dropped > 0
    }

    /// A cached unit failed verification: drop it if it is still the same unit that was
    /// read (epoch unchanged). Returns whether it was dropped (a heal).
    pub(crate) fn drop_bad(&self, u: usize, epoch: u32, why: &str) -> bool {
        let mut st = lock(&self.state);
        if !matches!(st.slots.get(u), Some(Slot::Present)) || st.epochs[u] != epoch {
            return false;
        }
        self.drop_unit(&mut st, u);
        drop(st);
        Metrics::global().add_heal(&self.digest);
        let now = now_ms();
        let prev = self.last_heal_warn_ms.swap(now, Ordering::Relaxed);
        let (s, e) = self.unit_bounds(u as u64);
        if now >= prev + 60_000 {
            tracing::warn!(
                digest = %self.digest, offset = s, len = e - s, reason = why,
                "cached data failed verification; dropped and refetching"
            );
        } else {
            tracing::debug!(digest = %self.digest, offset = s, reason = why, "cache heal");
        }
        true
    }
}

/// Byte range of unit `u` of a blob of `size` bytes with units of `unit` bytes.
pub(crate) fn unit_bounds(u: u64, unit: u64, size: u64) -> (u64, u64) {
    let s = u.saturating_mul(unit).min(size);
    (s, s.saturating_add(unit).min(size))
}

/// Open and parse the files of `hex`, checking they describe a blob of `size` bytes.
fn load(dir: &std::path::Path, hex: &str, size: u64) -> Result<(Files, meta::ParsedMeta, u64)> {
    let files = Files::open(dir, hex)?;
    let parsed = scan::read_meta(&files.meta_path)?;
    if parsed.header.digest != layout::digest_bytes(hex) {
        return Err(Error::corrupt("meta file belongs to another blob").with_path(&files.meta_path));
    }
    if parsed.header.size != size {
        return Err(Error::corrupt(format!(
            "meta file says the blob has {} bytes, the source has {size}",
            parsed.header.size
        ))
        .with_path(&files.meta_path));
    }
    let len = files.data_len();
    Ok((files, parsed, len))
}

impl Drop for CachedBlob {
    fn drop(&mut self) {
        self.persist_header();
    }
}
