//! The registry-backed [`RemoteSource`]: lowers that name `digest` + `repoBlobUrl` are read
//! lazily from the registry, through the shared blob cache, and switched to a local file
//! once background download has fetched and verified the whole blob.
//!
//! ```text
//!   device read ─> RemoteLayer ─current─> CachedBlob ──miss──> RemoteBlobFile ──> registry
//!                       │                    (cacheDir, shared by digest, CRC-checked)
//!                       └─ after download ─> FileDevice(dir/overlaybd.commit)
//! ```

mod download;
mod layer;
mod options;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use obd_cache::BlobCache;
use obd_core::{ReadAt, Result};
use obd_registry::Registry;

use crate::config::global::{DownloadConfig, GlobalConfig};
use crate::source::{RemoteBlob, RemoteLayerStatus, RemoteSource};

pub use download::DownloadState;
pub use layer::RemoteLayer;
pub use options::{cache_options, registry_options};

/// Reads remote lowers from OCI registries (see the module docs). One per daemon.
pub struct RegistrySource {
    registry: Registry,
    cache: Option<Arc<BlobCache>>,
    layers: Mutex<HashMap<String, Weak<RemoteLayer>>>,
    downloads: download::Downloads,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("cache", &self.cache.as_ref().map(|c| c.dir().to_path_buf()))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegistrySource {
    /// A source configured from the global config: registry client (credentials, TLS,
    /// timeouts, P2P prefix) and the shared cache under `cacheConfig.cacheDir`. Returns the
    /// source and warnings (settings that are accepted but not honoured as written).
    pub fn from_global(g: &GlobalConfig) -> Result<(RegistrySource, Vec<String>)> {
        let mut warnings = Vec::new();
        let registry = Registry::new(registry_options(g, &mut warnings)?)?;
        let cache = match BlobCache::open(cache_options(g, &mut warnings)) {
            Ok(c) => Some(c),
            // Another process (the daemon) owns the cache: read without it.
            Err(e) if e.kind() == obd_core::ErrorKind::AlreadyExists => {
                warnings.push(format!("{e}; reading without the cache"));
                None
            }
            Err(e) => return Err(e),
        };
        Ok((RegistrySource::new(registry, cache), warnings))
    }

    /// A source over an already built client and cache (`None`: no caching).
    pub fn new(registry: Registry, cache: Option<Arc<BlobCache>>) -> RegistrySource {
        RegistrySource {
            registry,
            cache,
            layers: Mutex::new(HashMap::new()),
            downloads: download::Downloads::default(),
        }
    }

    /// The shared blob cache, if caching is on.
    pub fn cache(&self) -> Option<&Arc<BlobCache>> {
        self.cache.as_ref()
    }

    /// The registry client.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn live_layer(&self, digest: &str) -> Option<Arc<RemoteLayer>> {
        lock(&self.layers).get(digest).and_then(Weak::upgrade)
    }
}

impl RemoteSource for RegistrySource {
    fn open_blob(&self, req: &RemoteBlob<'_>) -> Result<Arc<dyn ReadAt>> {
        if let Some(l) = self.live_layer(req.digest) {
            return Ok(l);
        }
        let remote = self
            .registry
            .open_blob(req.repo_blob_url, req.digest, req.size)?;
        let cached = match &self.cache {
            Some(c) => Some(c.blob(req.digest, remote.clone())?),
            None => None,
        };
        let layer = Arc::new(RemoteLayer::new(req.digest, remote, cached));
        let mut map = lock(&self.layers);
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(req.digest.to_string(), Arc::downgrade(&layer));
        Ok(layer)
    }

    fn heal(&self, digest: &str) {
        if let Some(l) = self.live_layer(digest) {
            l.heal();
        }
    }

    fn start_download(&self, req: &RemoteBlob<'_>, cfg: &DownloadConfig) {
        let (Some(dir), Some(layer)) = (req.dir, self.live_layer(req.digest)) else {
            return;
        };
        if !layer.is_local() {
            self.downloads.start(&layer, dir, cfg);
        }
    }

    fn layer_status(&self) -> Vec<RemoteLayerStatus> {
        let layers: Vec<Arc<RemoteLayer>> = lock(&self.layers)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut out: Vec<RemoteLayerStatus> = layers
            .iter()
            .map(|l| {
                let d = self.downloads.status(l.digest());
                RemoteLayerStatus {
                    digest: l.digest().to_string(),
                    size: l.size(),
                    cached_bytes: l.cached_bytes(),
                    download: d.as_ref().map_or("none", |d| d.state.as_str()).to_string(),
                    downloaded_bytes: d.as_ref().map_or(0, |d| d.done),
                    download_attempts: d.as_ref().map_or(0, |d| d.attempts),
                    download_error: d.and_then(|d| d.error),
                    local_file: l.local_file(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out
    }
}
