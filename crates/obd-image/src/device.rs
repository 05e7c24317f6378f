//! An opened device: the merged read-only stack, optionally under a writable upper.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_core::{BlockDevice, Error, ErrorKind, ReadAt, Result};
use obd_lsmt::{LayerStack, StackDevice, WritableLayer};

/// What an [`ImageDevice`] is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The config file the device was opened from.
    pub config_path: PathBuf,
    /// Device size in bytes.
    pub size: u64,
    /// Whether writes are refused (no upper).
    pub read_only: bool,
    /// Number of lowers in the block stack (an acceleration layer is not counted).
    pub lowers: usize,
    /// The upper's `(data, index)` files.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// The config's `resultFile`, resolved against the config's directory.
    pub result_file: Option<PathBuf>,
    /// Warnings from the config and from opening (unknown fields, ignored settings,
    /// a torn index entry cut off...).
    pub warnings: Vec<String>,
}

#[derive(Clone)]
pub(crate) enum Body {
    /// Lowers only.
    ReadOnly(Arc<LayerStack>),
    /// An upper over optional lowers.
    Writable(StackDevice),
}

/// A virtual disk opened from a `config.v1.json`: lowers merged into one index, plus the
/// writable upper when the config has one. Thread-safe; cheap to share behind an `Arc`.
///
/// Without an upper, writes and discards fail with [`ErrorKind::ReadOnly`] and flush
/// succeeds.
pub struct ImageDevice {
    pub(crate) info: DeviceInfo,
    pub(crate) stack: Option<Arc<LayerStack>>,
    pub(crate) body: Body,
    pub(crate) prefetch: Prefetch,
}

/// Trace recording or prefetching attached to a device (see [`crate::prefetch`]).
#[derive(Default)]
pub(crate) enum Prefetch {
    /// Nothing.
    #[default]
    None,
    /// Recording this device's reads; the trace is written when the device closes.
    Record(Arc<crate::prefetch::TraceRecorder>),
    /// Replaying a trace or reading a file list in the background (stopped on close).
    Running(crate::prefetch::ReplayHandle),
}

impl Drop for ImageDevice {
    fn drop(&mut self) {
        match &self.prefetch {
            Prefetch::None => {}
            Prefetch::Record(r) => {
                if let Err(e) = r.finish() {
                    tracing::warn!(
                        "{}: trace not written: {e}",
                        self.info.config_path.display()
                    );
                }
            }
            Prefetch::Running(h) => h.stop(),
        }
    }
}

impl std::fmt::Debug for ImageDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDevice")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ImageDevice {
    /// What the device is made of.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The merged read-only stack of the lowers (shared with other devices of the same
    /// layers), if there are lowers.
    pub fn stack(&self) -> Option<&Arc<LayerStack>> {
        self.stack.as_ref()
    }

    /// The writable upper, if any.
    pub fn upper(&self) -> Option<&Arc<dyn WritableLayer>> {
        match &self.body {
            Body::Writable(s) => Some(s.upper()),
            Body::ReadOnly(_) => None,
        }
    }

    /// The unwrapped bytes of each lower, bottom to top (shared between devices).
    pub fn lower_sources(&self) -> Vec<Arc<dyn ReadAt>> {
        self.stack
            .as_ref()
            .map(|s| s.layers().iter().map(|l| l.source().clone()).collect())
            .unwrap_or_default()
    }

    /// Progress of the trace replay or file-list prefetch, if one runs.
    pub fn prefetch_progress(&self) -> Option<crate::prefetch::ReplayStats> {
        match &self.prefetch {
            Prefetch::Running(h) => Some(h.progress()),
            _ => None,
        }
    }

    /// Whether this device records a trace of its reads.
    pub fn is_recording(&self) -> bool {
        matches!(self.prefetch, Prefetch::Record(_))
    }

    fn read_only_error(&self, offset: u64) -> Error {
        Error::new(
            ErrorKind::ReadOnly,
            "device is read-only (its config has no writable upper)",
        )
        .at_offset(offset)
        .with_path(&self.info.config_path)
    }
}

impl ReadAt for ImageDevice {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match &self.body {
            Body::ReadOnly(s) => s.read_exact_at(buf, offset),
            Body::Writable(d) => d.read_exact_at(buf, offset),
        }
    }

    fn path(&self) -> Option<&Path> {
        match &self.body {
            Body::ReadOnly(_) => None,
            Body::Writable(d) => d.path(),
        }
    }
}

impl BlockDevice for ImageDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        match &self.body {
            Body::ReadOnly(_) => Err(self.read_only_error(offset)),
            Body::Writable(d) => d.write_at(buf, offset),
        }
    }

    fn flush(&self) -> Result<()> {
        match &self.body {
            Body::ReadOnly(_) => Ok(()),
            Body::Writable(d) => d.flush(),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        match &self.body {
            Body::ReadOnly(_) => Err(self.read_only_error(offset)),
            Body::Writable(d) => d.discard(offset, len),
        }
    }

    fn is_read_only(&self) -> bool {
        match &self.body {
            Body::ReadOnly(_) => true,
            Body::Writable(d) => d.is_read_only(),
        }
    }
}
