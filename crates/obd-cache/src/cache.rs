//! The cache as a whole: the index of blobs on disk, the byte budget (reservations and LRU
//! eviction), write-error back-off, gc and clear.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use obd_core::{Error, ErrorKind, ReadAt, Result};
use obd_metrics::Metrics;

use crate::blob::CachedBlob;
use crate::layout::{self, Item};
use crate::{CacheEntry, CacheOptions, CacheUsage, lock, meta, scan};

/// Pause between write attempts after a write error.
pub(crate) const WRITE_PAUSE: Duration = Duration::from_secs(10);

/// A blob known to the cache (on disk, open or not).
///
/// `cached` and `last_used_ms` are shared with the open [`CachedBlob`], so they are current
/// even while a blob is being dropped.
pub(crate) struct Slot {
    pub size: u64,
    pub cached: Arc<AtomicU64>,
    pub last_used_ms: Arc<AtomicU64>,
    pub open: Weak<CachedBlob>,
}

impl Slot {
    pub(crate) fn cached(&self) -> u64 {
        self.cached.load(Ordering::Acquire)
    }
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }
    pub(crate) fn is_open(&self) -> bool {
        self.open.strong_count() > 0
    }
}

/// Blobs by hex digest.
#[derive(Default)]
pub(crate) struct Index {
    pub slots: BTreeMap<String, Slot>,
}

/// The shared on-disk blob cache. One per daemon, shared by every device. See the crate
/// docs for the layout and the guarantees.
pub struct BlobCache {
    pub(crate) dir: PathBuf,
    pub(crate) capacity: u64,
    pub(crate) refill: u32,
    pub(crate) used: AtomicU64,
    pub(crate) index: Mutex<Index>,
    opening: Mutex<HashSet<String>>,
    opening_cv: Condvar,
    pub(crate) paused_until: Mutex<Option<Instant>>,
    pub(crate) failing: AtomicBool,
    _lock: File,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .field("refill", &self.refill)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Removes `hex` from the opening set when dropped.
struct Opening<'a>(&'a BlobCache, String);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        lock(&self.0.opening).remove(&self.1);
        self.0.opening_cv.notify_all();
    }
}

pub(crate) fn remove_file(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(path) {
        Ok(()) => len,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove cache file");
            0
        }
    }
}

impl BlobCache {
    /// Open (creating) the cache at `opts.dir`: takes the directory's lock, scans the
    /// blobs already there (a restart keeps the cache), drops damaged meta files and
    /// orphaned files with a warning, and evicts down to the capacity if it shrank.
    pub fn open(opts: CacheOptions) -> Result<Arc<BlobCache>> {
        if !meta::valid_refill(opts.refill) {
            return Err(Error::invalid_input(format!(
                "cache refill size {} is not a power of two between 4096 and {}",
                opts.refill,
                meta::MAX_REFILL
            )));
        }
        let dir = opts.dir;
        let sub = dir.join(layout::SUBDIR);
        std::fs::create_dir_all(&sub)
            .map_err(|e| Error::io("create directory", e).with_path(&sub))?;
        let lock_path = dir.join(layout::LOCK_FILE);
        let lock_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open", e).with_path(&lock_path))?;
        if let Err(e) = rustix::fs::flock(
            &lock_file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("the cache directory is in use by another process ({e})"),
            )
            .with_path(&lock_path));
        }
        let mut index = Index::default();
        let mut datas = Vec::new();
        for (path, item) in layout::list(&dir)? {
            match item {
                Item::Meta(hex) => match scan::inspect(&dir, &hex) {
                    Ok(i) => {
                        let slot = Slot {
                            size: i.size,
                            cached: Arc::new(AtomicU64::new(i.cached)),
                            last_used_ms: Arc::new(AtomicU64::new(i.last_used_ms)),
                            open: Weak::new(),
                        };
                        index.slots.insert(hex, slot);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping a damaged cache entry");
                        remove_file(&path);
                        remove_file(&layout::data_path(&dir, &hex));
                    }
                },
                Item::Data(hex) => datas.push((path, hex)),
                Item::Other => {
                    tracing::info!(path = %path.display(), "removing a stray file from the cache");
                    remove_file(&path);
                }
                Item::SideLoad(_) | Item::Rejected | Item::Lock | Item::Foreign => {}
            }
        }
        for (path, hex) in datas {
            if !index.slots.contains_key(&hex) {
                tracing::warn!(path = %path.display(), "removing a cache data file without meta");
                remove_file(&path);
            }
        }
        let used = index.slots.values().map(Slot::cached).sum();
        let cache = Arc::new(BlobCache {
            dir,
            capacity: opts.capacity,
            refill: opts.refill,
            used: AtomicU64::new(used),
            index: Mutex::new(index),
            opening: Mutex::new(HashSet::new()),
            opening_cv: Condvar::new(),
            paused_until: Mutex::new(None),
            failing: AtomicBool::new(false),
            _lock: lock_file,
        });
        if used > cache.capacity {
            cache.gc(Some(cache.capacity))?;
        }
        cache.publish_usage();
        Ok(cache)
    }

    /// The cached view of blob `digest` (`sha256:<64 hex>`), reading misses from `source`.
    /// The same `Arc` is returned for the same digest while any holder lives (the first
    /// source stays in use). A side-loaded copy of the blob in the directory is verified
    /// and adopted here.
    pub fn blob(
        self: &Arc<Self>,
        digest: &str,
        source: Arc<dyn ReadAt>,
    ) -> Result<Arc<CachedBlob>> {
        let hex = layout::parse_digest(digest)?.to_string();
        let size = source.size();
        if size > meta::MAX_SIZE {
            return Err(Error::invalid_input(format!(
                "{digest}: blob size {size} is too large to cache"
            )));
        }
        if let Some(b) = self.live(&hex) {
            return same_size(b, size);
        }
        let _opening = self.begin_open(&hex);
        if let Some(b) = self.live(&hex) {
            return same_size(b, size);
        }
        crate::sideload::adopt_if_present(self, &hex, size);
        let mut idx = lock(&self.index);
        // A blob dropped by its last holder a moment ago has frozen counters (nothing can
        // read it any more): take them over.
        let (existing, cached, last_used) = match idx.slots.get(&hex) {
            Some(s) => (true, s.cached.clone(), s.last_used_ms.clone()),
            None => (false, Arc::default(), Arc::default()),
        };
        let old = cached.load(Ordering::Acquire);
        let blob = CachedBlob::open_locked(
            self,
            &hex,
            source,
            existing,
            cached.clone(),
            last_used.clone(),
        );
        self.release(old);
        self.used.fetch_add(blob.cached_bytes(), Ordering::AcqRel);
        idx.slots.insert(
            hex,
            Slot {
                size,
                cached,
                last_used_ms: last_used,
                open: Arc::downgrade(&blob),
            },
        );
        drop(idx);
        self.publish_usage();
        Ok(blob)
    }

    fn live(&self, hex: &str) -> Option<Arc<CachedBlob>> {
        lock(&self.index)
            .slots
            .get(hex)
            .and_then(|s| s.open.upgrade())
    }

    fn begin_open(&self, hex: &str) -> Opening<'_> {
        let mut set = lock(&self.opening);
        while set.contains(hex) {
            set = self.opening_cv.wait(set).unwrap_or_else(|p| p.into_inner());
        }
        set.insert(hex.to_string());
        Opening(self, hex.to_string())
    }

    /// Every blob on disk, open or not, by digest.
    pub fn list(&self) -> Vec<CacheEntry> {
        let idx = lock(&self.index);
        idx.slots
            .iter()
            .map(|(hex, s)| CacheEntry {
                digest: format!("sha256:{hex}"),
                size: s.size,
                cached_bytes: s.cached(),
                complete: s.cached() == s.size,
                open: s.is_open(),
                last_used: scan::time_of_ms(s.last_used()),
            })
            .collect()
    }

    /// Bytes used (cached and reserved for fills in progress), capacity, blob count, refill.
    pub fn usage(&self) -> CacheUsage {
        CacheUsage {
            used: self.used.load(Ordering::Acquire),
            capacity: self.capacity,
            blobs: lock(&self.index).slots.len(),
            refill: self.refill,
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn release(&self, n: u64) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(n))
                });
        }
    }

    pub(crate) fn publish_usage(&self) {
        Metrics::global().set_cache_usage(self.used.load(Ordering::Acquire), self.capacity);
    }

    /// Reserve `len` bytes of the budget for a fill of `requester`, evicting least recently
    /// used blobs (then `requester`'s own oldest units) as needed. `false`: do not cache.
    pub(crate) fn reserve(&self, requester: Option<&CachedBlob>, len: u64) -> bool {
        let mut keep = Vec::new();
        let mut idx = lock(&self.index);
        let ok = self.reserve_locked(&mut idx, requester, len, &mut keep);
        drop(idx);
        drop(keep);
        ok
    }

    /// [`BlobCache::reserve`] with the index locked; blobs touched are pushed to `keep`
    /// (dropped by the caller after unlocking, as a blob's drop locks the index).
    pub(crate) fn reserve_locked(
        &self,
        idx: &mut Index,
        requester: Option<&CachedBlob>,
        len: u64,
        keep: &mut Vec<Arc<CachedBlob>>,
    ) -> bool {
        if len > self.capacity {
            return false;
        }
        let fits = |c: &Self| c.used.load(Ordering::Acquire).saturating_add(len) <= c.capacity;
        if !fits(self) {
            let own = requester.map(|r| r.hex.as_str());
            for hex in self.lru_order(idx, own) {
                if fits(self) {
                    break;
                }
                self.evict_slot(idx, &hex, keep);
            }
        }
        if !fits(self)
            && let Some(r) = requester
        {
            // Free a little more than needed (up to 1/64 of the capacity, at most 32 MiB)
            // so that a blob filling a full cache does not sort its units on every fill.
            let need = self.used.load(Ordering::Acquire) + len - self.capacity;
            let batch = (self.capacity / 64).min(32 << 20);
            let freed = r.evict_own_lru(need.max(batch.min(self.used.load(Ordering::Acquire))));
            if freed > 0 {
                Metrics::global().add_eviction(freed);
            }
        }
        if !fits(self) {
            return false;
        }
        self.used.fetch_add(len, Ordering::AcqRel);
        true
    }

    /// Hex digests of the blobs holding data, least recently used first, except `skip`.
    pub(crate) fn lru_order(&self, idx: &Index, skip: Option<&str>) -> Vec<String> {
        let mut c: Vec<(u64, String)> = Vec::new();
        for (hex, s) in &idx.slots {
            if Some(hex.as_str()) != skip && s.cached() > 0 {
                c.push((s.last_used(), hex.clone()));
            }
        }
        c.sort();
        c.into_iter().map(|(_, h)| h).collect()
    }

    /// Evict the whole blob `hex`: an open blob drops its cached units and keeps working;
    /// a closed one loses its files. Returns the bytes freed.
    pub(crate) fn evict_slot(
        &self,
        idx: &mut Index,
        hex: &str,
        keep: &mut Vec<Arc<CachedBlob>>,
    ) -> u64 {
        let Some(s) = idx.slots.get(hex) else {
            return 0;
        };
        let freed = match s.open.upgrade() {
            Some(b) => {
                let f = b.evict_all();
                keep.push(b);
                f
            }
            None => {
                let c = s.cached();
                remove_file(&layout::meta_path(&self.dir, hex));
                remove_file(&layout::data_path(&self.dir, hex));
                idx.slots.remove(hex);
                self.release(c);
                c
            }
        };
        if freed > 0 {
            Metrics::global().add_eviction(freed);
            tracing::debug!(digest = %format!("sha256:{hex}"), freed, "evicted from the cache");
            self.note_eviction();
        }
        freed
    }
}

fn same_size(b: Arc<CachedBlob>, size: u64) -> Result<Arc<CachedBlob>> {
    if b.size != size {
        return Err(Error::invalid_input(format!(
            "{}: already open with size {}, the new source has {size} bytes",
            b.digest, b.size
        )));
    }
    Ok(b)
}
