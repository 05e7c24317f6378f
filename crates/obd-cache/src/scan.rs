//! Reading meta files from disk, and the offline operations on a cache directory.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obd_core::{Error, Result, ResultExt};

use crate::layout::{self, Item};
use crate::meta::{self, HEADER_LEN, ParsedMeta};
use crate::{BlobCache, CacheEntry, CacheOptions, GcReport};

/// Largest meta file read (a 1 TiB blob with 4 KiB units has a 3 GiB meta; 256 MiB is a
/// 256 GiB blob at 4 KiB or far more at the default unit).
const MAX_META: u64 = 256 << 20;

/// Read and parse a meta file (bounded).
pub(crate) fn read_meta(path: &Path) -> Result<ParsedMeta> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_path(path))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat", e).with_path(path))?
        .len();
    let mut head = [0u8; HEADER_LEN];
    let n = (len as usize).min(HEADER_LEN);
    f.read_exact_at(&mut head[..n], 0)
        .map_err(|e| Error::io("read", e).with_path(path))?;
    let h = meta::parse_header(&head[..n]).with_path(path)?;
    let full = meta::full_len(h.size, h.refill);
    if len > full || len > MAX_META {
        return Err(Error::corrupt(format!(
            "meta file is {len} bytes; its header implies {full}"
        ))
        .with_path(path));
    }
    let mut all = vec![0u8; len as usize];
    f.read_exact_at(&mut all, 0)
        .map_err(|e| Error::io("read", e).with_path(path))?;
    meta::parse(&all).with_path(path)
}

/// What the files of one blob say, without opening it.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub size: u64,
    pub cached: u64,
    pub last_used_ms: u64,
}

/// Inspect the meta and data files of `hex`: cached bytes are the present units whose data
/// lies inside the data file.
pub(crate) fn inspect(dir: &Path, hex: &str) -> Result<Info> {
    let meta_path = layout::meta_path(dir, hex);
    let p = read_meta(&meta_path)?;
    if p.header.digest != layout::digest_bytes(hex) {
        return Err(Error::corrupt("meta file belongs to another blob").with_path(&meta_path));
    }
    let data_path = layout::data_path(dir, hex);
    let data_len = std::fs::metadata(&data_path)
        .map_err(|e| Error::io("stat", e).with_path(&data_path))?
        .len();
    let unit = u64::from(p.header.refill);
    let cached = p
        .present
        .iter()
        .map(|(u, _)| crate::blob::unit_bounds(*u, unit, p.header.size))
        .filter(|&(_, e)| e <= data_len)
        .map(|(s, e)| e - s)
        .sum();
    if p.bad_records > 0 {
        tracing::warn!(
            path = %meta_path.display(), records = p.bad_records,
            "cache meta file has damaged unit records; those units will be refetched"
        );
    }
    Ok(Info {
        size: p.header.size,
        cached,
        last_used_ms: p.header.last_used_ms,
    })
}

/// `SystemTime` of a count of milliseconds since the Unix epoch.
pub(crate) fn time_of_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// List every blob cached under `dir` (for `obd cache ls` without a running daemon).
/// Read-only: damaged files are skipped, nothing is changed.
pub fn scan_dir(dir: &Path) -> Result<Vec<CacheEntry>> {
    let mut out = Vec::new();
    for (path, item) in layout::list(dir)? {
        let Item::Meta(hex) = item else { continue };
        match inspect(dir, &hex) {
            Ok(i) => out.push(CacheEntry {
                digest: format!("sha256:{hex}"),
                size: i.size,
                cached_bytes: i.cached,
                complete: i.cached == i.size,
                open: false,
                last_used: time_of_ms(i.last_used_ms),
            }),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "skipping damaged cache entry")
            }
        }
    }
    Ok(out)
}

fn offline(dir: &Path) -> Result<std::sync::Arc<BlobCache>> {
    BlobCache::open(CacheOptions {
        dir: dir.to_path_buf(),
        capacity: u64::MAX,
        refill: crate::DEFAULT_REFILL,
    })
}

/// Remove everything cached under `dir` (for `obd cache clear` without a running daemon;
/// fails if a daemon holds the directory). Returns the bytes freed.
pub fn clear_dir(dir: &Path) -> Result<u64> {
    offline(dir)?.clear()
}

/// Evict least recently used blobs under `dir` until at most `target` bytes are cached, and
/// remove orphaned files (for `obd cache gc` without a running daemon; fails if a daemon
/// holds the directory).
pub fn gc_dir(dir: &Path, target: u64) -> Result<GcReport> {
    offline(dir)?.gc(Some(target))
}
