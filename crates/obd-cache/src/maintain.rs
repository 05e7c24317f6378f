//! Maintenance of the cache: gc, clear, orphan removal and the write-error back-off.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use obd_core::{Error, Result};
use obd_metrics::Metrics;

use crate::cache::{Index, Slot, WRITE_PAUSE, remove_file};
use crate::layout::{self, Item};
use crate::{BlobCache, GcReport, lock};

impl BlobCache {
    /// Evict least recently used whole blobs until at most `target` bytes (default 90 % of
    /// the capacity) are used; also remove orphaned files (data without meta, stray files).
    pub fn gc(&self, target: Option<u64>) -> Result<GcReport> {
        let target = target.unwrap_or(self.capacity - self.capacity / 10);
        let mut keep = Vec::new();
        let mut idx = lock(&self.index);
        let mut report = GcReport {
            evicted_blobs: 0,
            freed_bytes: 0,
            removed_orphans: self.remove_orphans(&mut idx)?,
        };
        for hex in self.lru_order(&idx, None) {
            if self.used.load(Ordering::Acquire) <= target {
                break;
            }
            let freed = self.evict_slot(&mut idx, &hex, &mut keep);
            if freed > 0 {
                report.evicted_blobs += 1;
                report.freed_bytes += freed;
            }
        }
        drop(idx);
        drop(keep);
        self.publish_usage();
        Ok(report)
    }

    fn remove_orphans(&self, idx: &mut Index) -> Result<usize> {
        let mut n = 0;
        let files = layout::list(&self.dir)?;
        let metas: HashSet<&str> = files
            .iter()
            .filter_map(|(_, i)| {
                if let Item::Meta(h) = i {
                    Some(h.as_str())
                } else {
                    None
                }
            })
            .collect();
        let datas: HashSet<&str> = files
            .iter()
            .filter_map(|(_, i)| {
                if let Item::Data(h) = i {
                    Some(h.as_str())
                } else {
                    None
                }
            })
            .collect();
        for (path, item) in &files {
            let orphan = match item {
                Item::Data(h) => !idx.slots.contains_key(h) || !metas.contains(h.as_str()),
                Item::Meta(h) => !idx.slots.contains_key(h) || !datas.contains(h.as_str()),
                Item::Other => true,
                _ => false,
            };
            let open = match item {
                Item::Data(h) | Item::Meta(h) => idx.slots.get(h).is_some_and(Slot::is_open),
                _ => false,
            };
            if orphan && !open {
                tracing::info!(path = %path.display(), "removing an orphaned cache file");
                remove_file(path);
                n += 1;
                if let Item::Data(h) | Item::Meta(h) = item
                    && let Some(s) = idx.slots.remove(h)
                {
                    self.release(s.cached());
                }
            }
        }
        Ok(n)
    }

    /// Drop everything cached, also while blobs are open and being read (they keep working
    /// and refetch), plus side-loaded and rejected files. Returns the bytes freed.
    pub fn clear(&self) -> Result<u64> {
        let mut keep = Vec::new();
        let mut idx = lock(&self.index);
        let mut freed = 0;
        let hexes: Vec<String> = idx.slots.keys().cloned().collect();
        for hex in hexes {
            let Some(s) = idx.slots.get(&hex) else {
                continue;
            };
            match s.open.upgrade() {
                Some(b) => {
                    freed += b.reset_all();
                    keep.push(b);
                }
                None => {
                    freed += s.cached();
                    self.release(s.cached());
                    remove_file(&layout::meta_path(&self.dir, &hex));
                    remove_file(&layout::data_path(&self.dir, &hex));
                    idx.slots.remove(&hex);
                }
            }
        }
        for (path, item) in layout::list(&self.dir)? {
            let keep_file = match &item {
                Item::Meta(h) | Item::Data(h) => idx.slots.contains_key(h),
                Item::Lock | Item::Foreign => true,
                _ => false,
            };
            if !keep_file {
                freed += remove_file(&path);
            }
        }
        drop(idx);
        drop(keep);
        self.note_eviction();
        self.publish_usage();
        tracing::info!(dir = %self.dir.display(), freed, "cache cleared");
        Ok(freed)
    }

    /// Whether fills may write now (not paused after a write error).
    pub(crate) fn writes_allowed(&self) -> bool {
        if !self.failing.load(Ordering::Acquire) {
            return true;
        }
        lock(&self.paused_until).is_none_or(|t| Instant::now() >= t)
    }

    /// A write to the cache failed: pause writes for a while, count it, warn once.
    pub(crate) fn note_write_error(&self, e: &Error) {
        let enospc = matches!(e.errno(), libc::ENOSPC | libc::EDQUOT);
        Metrics::global().add_error(if enospc { "cache_enospc" } else { "cache_io" });
        *lock(&self.paused_until) = Some(Instant::now() + WRITE_PAUSE);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                dir = %self.dir.display(), error = %e,
                "cannot write to the blob cache; serving from the source without caching and retrying later"
            );
        }
    }

    /// A write succeeded: writes work again.
    pub(crate) fn note_write_ok(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            *lock(&self.paused_until) = None;
            tracing::info!(dir = %self.dir.display(), "writes to the blob cache work again");
        }
    }

    /// Space was freed: let the next fill try writing again.
    pub(crate) fn note_eviction(&self) {
        *lock(&self.paused_until) = None;
    }
}
