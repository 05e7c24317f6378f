//! Where a lower's bytes come from: a local file, a file in the layer directory, or the
//! registry through a pluggable [`RemoteSource`].
//!
//! ```text
//!   lowers[i].file ──exists──────────────────────────────> local file
//!   lowers[i].dir  ──overlaybd.commit | .commit | overlaybd.sealed ──> local file
//!   lowers[i].digest + repoBlobUrl ──RemoteSource::open_blob──> remote bytes
//! ```
//!
//! Either way the bytes are then unwrapped ([`crate::blob::unwrap_blob`]: tar, ZFile) and
//! opened as an LSMT layer, so a remote source only has to serve raw blob bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_core::{Error, ErrorKind, ReadAt, Result};

use crate::config::device::{DIR_LAYER_NAMES, LowerConfig};
use crate::config::global::DownloadConfig;

/// Where a lower's blob bytes come from when they are not a local file.
///
/// The registry client implements this; tests can serve local files. Implementations are
/// shared by every device of a service and called from several threads.
pub trait RemoteSource: Send + Sync {
    /// Raw bytes of blob `digest` of `repo_blob_url` (may be tar-wrapped / ZFile; unwrapping
    /// happens above).
    fn open_blob(&self, req: &RemoteBlob<'_>) -> Result<Arc<dyn ReadAt>>;

    /// Bytes of blob `digest` failed a format check above the seam (ZFile CRC, LSMT header
    /// or index): drop whatever is cached of it, so the next read refetches. Default: no-op.
    fn heal(&self, _digest: &str) {}

    /// A device using `req` opened with background download enabled: fetch the whole blob
    /// into `req.dir` and switch to the local file. Default: no-op.
    fn start_download(&self, _req: &RemoteBlob<'_>, _cfg: &DownloadConfig) {}

    /// What the source knows about its remote layers (download progress), for status output.
    fn layer_status(&self) -> Vec<RemoteLayerStatus> {
        Vec::new()
    }
}

/// The state of one remote layer, for `obd status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteLayerStatus {
    /// Blob digest.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Bytes held by the shared cache.
    pub cached_bytes: u64,
    /// Background download: `none`, `waiting`, `running`, `done`, `failed`.
    pub download: String,
    /// Background download: bytes written so far.
    pub downloaded_bytes: u64,
    /// Background download: attempts made.
    pub download_attempts: u32,
    /// Background download: the last error, if any.
    pub download_error: Option<String>,
    /// The local file the layer reads from after download, if switched.
    pub local_file: Option<PathBuf>,
}

/// A request for a remote blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBlob<'a> {
    /// `https://host/v2/<repo>/blobs`.
    pub repo_blob_url: &'a str,
    /// `sha256:<64 hex>`.
    pub digest: &'a str,
    /// The blob size from the config, when known.
    pub size: Option<u64>,
    /// The layer's directory (download / cache target), when configured.
    pub dir: Option<&'a Path>,
    /// Which lower this is (0 = bottom).
    pub layer_index: usize,
}

impl RemoteBlob<'_> {
    /// The blob URL: `<repoBlobUrl>/<digest>`.
    pub fn url(&self) -> String {
        format!(
            "{}/{}",
            self.repo_blob_url.trim_end_matches('/'),
            self.digest
        )
    }
}

/// A lower, resolved to where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerLocation {
    /// A local file (given as `file`, or found in `dir`).
    Local(PathBuf),
    /// A registry blob.
    Remote {
        /// The blob digest.
        digest: String,
        /// The declared size, if any (0 in the config counts as unknown).
        size: Option<u64>,
        /// The layer directory, if any.
        dir: Option<PathBuf>,
    },
}

/// The local file of a lower: `file` when set, else the first of [`DIR_LAYER_NAMES`] that
/// exists in `dir`.
pub(crate) fn local_file(l: &LowerConfig) -> Option<PathBuf> {
    if let Some(f) = &l.file {
        return Some(f.clone());
    }
    let dir = l.dir.as_ref()?;
    DIR_LAYER_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// `p` as is when absolute, else relative to `base` (the config file's directory).
pub(crate) fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Resolve lower `i` (paths relative to `base`). TurboOCI fields are unsupported; a lower
/// with neither a local file nor a digest is `NotFound`.
pub fn locate(l: &LowerConfig, base: &Path) -> Result<LayerLocation> {
    if l.target_file.is_some() || l.target_digest.is_some() || l.gzip_index.is_some() {
        return Err(Error::unsupported(
            "TurboOCI layers (targetFile / targetDigest / gzipIndex) are not supported yet",
        ));
    }
    let abs = LowerConfig {
        file: l.file.as_deref().map(|f| absolutize(base, f)),
        dir: l.dir.as_deref().map(|d| absolutize(base, d)),
        ..l.clone()
    };
    if let Some(p) = local_file(&abs) {
        return Ok(LayerLocation::Local(p));
    }
    match &l.digest {
        Some(d) => Ok(LayerLocation::Remote {
            digest: d.clone(),
            size: l.size.filter(|&s| s > 0),
            dir: abs.dir,
        }),
        None => {
            let dir = abs.dir.as_deref().unwrap_or(Path::new(""));
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no {} in {} and no digest to fetch the layer by",
                    DIR_LAYER_NAMES.join(", "),
                    dir.display()
                ),
            ))
        }
    }
}
