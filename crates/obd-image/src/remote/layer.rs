//! One remote blob as the layer stack sees it: reads go to the cache (or straight to the
//! registry) until background download switches the layer to a verified local file.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use obd_cache::CachedBlob;
use obd_core::{ReadAt, Result};
use obd_registry::RemoteBlobFile;

/// A remote blob whose reads can be switched live to a local copy.
pub struct RemoteLayer {
    digest: String,
    size: u64,
    remote: Arc<RemoteBlobFile>,
    cached: Option<Arc<CachedBlob>>,
    current: RwLock<Current>,
}

struct Current {
    reader: Arc<dyn ReadAt>,
    local: Option<PathBuf>,
}

impl std::fmt::Debug for RemoteLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLayer")
            .field("digest", &self.digest)
            .field("local", &self.local_file())
            .finish_non_exhaustive()
    }
}

impl RemoteLayer {
    pub(crate) fn new(
        digest: &str,
        remote: Arc<RemoteBlobFile>,
        cached: Option<Arc<CachedBlob>>,
    ) -> RemoteLayer {
        let reader: Arc<dyn ReadAt> = match &cached {
            Some(c) => c.clone(),
            None => remote.clone(),
        };
        RemoteLayer {
            digest: digest.to_string(),
            size: remote.size(),
            remote,
            cached,
            current: RwLock::new(Current {
                reader,
                local: None,
            }),
        }
    }

    /// The blob digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The registry file underneath (uncached).
    pub fn remote(&self) -> &Arc<RemoteBlobFile> {
        &self.remote
    }

    /// The shared cache entry, when caching is on.
    pub fn cached(&self) -> Option<&Arc<CachedBlob>> {
        self.cached.as_ref()
    }

    /// Bytes of this blob held by the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cached.as_ref().map_or(0, |c| c.cached_bytes())
    }

    /// The local file reads go to, once switched.
    pub fn local_file(&self) -> Option<PathBuf> {
        self.read_current().local.clone()
    }

    /// Whether reads already go to a local file.
    pub fn is_local(&self) -> bool {
        self.read_current().local.is_some()
    }

    /// Drop the cached bytes (they failed a check above); the next read refetches.
    pub fn heal(&self) {
        if let Some(c) = &self.cached {
            c.invalidate_all();
        }
    }

    /// Serve every further read from `reader` (the verified local copy at `path`).
    pub(crate) fn switch_to(&self, reader: Arc<dyn ReadAt>, path: PathBuf) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        cur.reader = reader;
        cur.local = Some(path);
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> Arc<dyn ReadAt> {
        self.read_current().reader.clone()
    }
}

impl ReadAt for RemoteLayer {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.reader().read_exact_at(buf, offset)
    }
}
