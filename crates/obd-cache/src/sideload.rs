//! Side-loading: a complete blob dropped into the cache directory by the user (upstream
//! #220) is verified by SHA-256 and adopted as a fully cached blob, or rejected.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use obd_core::{Error, Result};
use sha2::{Digest, Sha256};

use crate::cache::Slot;
use crate::meta::{self, BLOCK, MetaHeader};
use crate::{BlobCache, layout, lock, now_ms};

/// Look for a side-loaded copy of `hex` (`<dir>/sha256:<hex>`, `<dir>/sha256/<hex>`); adopt
/// the first that verifies, rename the ones that do not to `<name>.rejected`.
pub(crate) fn adopt_if_present(cache: &Arc<BlobCache>, hex: &str, size: u64) {
    for path in layout::sideload_paths(cache.dir(), hex) {
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if !is_file {
            continue;
        }
        match verify(&path, hex, size) {
            Ok(Ok(crcs)) => {
                if cache.adopt(hex, &path, size, &crcs) {
                    return;
                }
            }
            Ok(Err(why)) => {
                let mut rejected = path.clone().into_os_string();
                rejected.push(layout::REJECTED);
                let renamed = std::fs::rename(&path, &rejected);
                tracing::warn!(
                    path = %path.display(), reason = %why,
                    renamed_to = %std::path::Path::new(&rejected).display(),
                    rename_ok = renamed.is_ok(),
                    "side-loaded blob does not match its digest; rejected, fetching normally"
                );
            }
            Err(e) => tracing::warn!(
                error = %e, "cannot read a side-loaded blob; leaving it and fetching normally"
            ),
        }
    }
}

/// Hash `path`: `Ok(Ok(crcs))` with the CRC of every 4 KiB block when it is exactly the
/// blob (`size` bytes, SHA-256 `hex`), `Ok(Err(reason))` when it is not.
fn verify(path: &Path, hex: &str, size: u64) -> Result<std::result::Result<Vec<u32>, String>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_path(path))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat", e).with_path(path))?
        .len();
    if len != size {
        return Ok(Err(format!("it has {len} bytes, the blob has {size}")));
    }
    let mut sha = Sha256::new();
    let mut crcs = Vec::with_capacity(meta::block_count(size) as usize);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        // Fill the buffer fully (short reads happen) so blocks stay 4 KiB aligned.
        let mut n = 0;
        while n < buf.len() {
            let r = f.read(&mut buf[n..]).map_err(|e| {
                Error::io("read", e)
                    .with_path(path)
                    .at_offset(total + n as u64)
            })?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        crcs.extend(buf[..n].chunks(BLOCK as usize).map(crc32c::crc32c));
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    if total != size {
        return Ok(Err(format!(
            "it changed while being read ({total} bytes read)"
        )));
    }
    let got = hex::encode(sha.finalize());
    if got != hex {
        return Ok(Err(format!("its SHA-256 is {got}")));
    }
    Ok(Ok(crcs))
}

impl BlobCache {
    /// Make the verified file at `path` the cached copy of `hex` (all units present).
    fn adopt(&self, hex: &str, path: &Path, size: u64, crcs: &[u32]) -> bool {
        if size > self.capacity {
            tracing::warn!(
                path = %path.display(), size, capacity = self.capacity,
                "side-loaded blob is larger than the cache capacity; not adopted"
            );
            return false;
        }
        let mut keep = Vec::new();
        let mut idx = lock(&self.index);
        if let Some(old) = idx.slots.remove(hex) {
            self.release(old.cached.load(std::sync::atomic::Ordering::Acquire));
        }
        let adopted = self.reserve_locked(&mut idx, None, size, &mut keep);
        let result = adopted.then(|| self.install(hex, path, size, crcs));
        let ok = match result {
            Some(Ok(())) => {
                idx.slots.insert(
                    hex.to_string(),
                    Slot {
                        size,
                        cached: Arc::new(AtomicU64::new(size)),
                        last_used_ms: Arc::new(AtomicU64::new(now_ms())),
                        open: Weak::new(),
                    },
                );
                tracing::info!(digest = %format!("sha256:{hex}"), size, "adopted a side-loaded blob");
                true
            }
            Some(Err(e)) => {
                self.release(size);
                tracing::warn!(error = %e, "cannot adopt a side-loaded blob; fetching normally");
                false
            }
            None => {
                tracing::warn!(path = %path.display(), "no room in the cache for a side-loaded blob");
                false
            }
        };
        drop(idx);
        drop(keep);
        self.publish_usage();
        ok
    }

    /// Move the file into place and write a meta with every unit present.
    fn install(&self, hex: &str, path: &Path, size: u64, crcs: &[u32]) -> Result<()> {
        let data = layout::data_path(self.dir(), hex);
        let meta_path = layout::meta_path(self.dir(), hex);
        let _ = std::fs::remove_file(&meta_path);
        std::fs::rename(path, &data).map_err(|e| Error::io("rename", e).with_path(path))?;
        let header = MetaHeader {
            digest: layout::digest_bytes(hex),
            size,
            refill: self.refill,
            last_used_ms: now_ms(),
        };
        let bpu = (u64::from(self.refill) / BLOCK) as usize;
        let mut bytes = meta::encode_header(&header).to_vec();
        for (u, c) in crcs.chunks(bpu.max(1)).enumerate() {
            bytes.extend(meta::encode_present(self.refill, u as u64, c));
        }
        std::fs::write(&meta_path, &bytes).map_err(|e| {
            let _ = std::fs::remove_file(&data);
            let _ = std::fs::remove_file(&meta_path);
            Error::io("write", e).with_path(&meta_path)
        })
    }
}
