//! The control API's messages, shared by the daemon and its client.
//!
//! The API is HTTP/1.1 with JSON bodies on the daemon's unix socket (`daemon.socket` in the
//! global config, default `/run/overlaybd-rs/obd.sock`):
//!
//! | method and path       | body              | answer                     |
//! |-----------------------|-------------------|----------------------------|
//! | `GET /v1/health`      |                   | [`Health`]                 |
//! | `GET /v1/devices`     |                   | `[`[`DeviceEntry`]`]`      |
//! | `POST /v1/attach`     | [`AttachRequest`] | [`DeviceEntry`]            |
//! | `POST /v1/detach`     | [`DetachRequest`] | [`DeviceEntry`]            |
//! | `POST /v1/shutdown`   |                   | `{}`                       |
//!
//! Failures answer 4xx/5xx with an [`ApiError`]. `curl --unix-socket SOCK http://obd/v1/health`
//! works for scripts and probes.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a device is presented to the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportSpec {
    /// A FUSE mount presenting the device as the regular file at this absolute path.
    Fuse(PathBuf),
    /// An NBD server at `unix:/path` or `tcp:host:port`.
    Nbd(String),
}

impl ExportSpec {
    /// The string that names this export in `obd detach` and `obd list`.
    pub fn target(&self) -> String {
        match self {
            ExportSpec::Fuse(p) => p.display().to_string(),
            ExportSpec::Nbd(a) => a.clone(),
        }
    }
}

impl fmt::Display for ExportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportSpec::Fuse(p) => write!(f, "fuse:{}", p.display()),
            ExportSpec::Nbd(a) => write!(f, "nbd:{a}"),
        }
    }
}

/// Export tuning carried with an attach request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExportOptions {
    /// FUSE: open the file with `FOPEN_DIRECT_IO` (no page cache in the FUSE layer).
    pub direct_io: bool,
    /// FUSE: worker threads (default 2).
    pub threads: Option<usize>,
}

/// `POST /v1/attach`: open the device described by `config` and export it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachRequest {
    /// Absolute path of the device's `config.v1.json`.
    pub config: PathBuf,
    /// Where and how to export it.
    pub export: ExportSpec,
    /// Device id (default: the export target).
    #[serde(default)]
    pub id: Option<String>,
    /// Export tuning.
    #[serde(default)]
    pub options: ExportOptions,
}

/// `POST /v1/detach`: flush and remove a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetachRequest {
    /// The device id, its FUSE file path, or its NBD address (`unix:…`, `tcp:…`, or a socket path).
    pub target: String,
}

/// One attached device, as `GET /v1/devices` and `obd list` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEntry {
    /// Device id.
    pub id: String,
    /// The device's config file.
    pub config: PathBuf,
    /// How it is exported.
    pub export: ExportSpec,
    /// Virtual size in bytes.
    pub size: u64,
    /// Whether writes are refused (no upper layer).
    pub read_only: bool,
    /// Number of lower layers.
    pub lowers: usize,
    /// Seconds since the Unix epoch when it was attached.
    pub attached_at: u64,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always "ok" when the daemon answers.
    pub status: String,
    /// The daemon's process id.
    pub pid: u32,
    /// overlaybd-rs version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Number of attached devices.
    pub devices: usize,
    /// The global config file in use (absent: built-in defaults).
    pub service_config: Option<PathBuf>,
}

/// The body of every failed API call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a user.
    pub error: String,
}

/// `GET /v1/cache`: the shared registry cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheReply {
    /// The cache directory.
    pub dir: PathBuf,
    /// Used bytes, capacity, blob count, fill unit.
    pub usage: serde_json::Value,
    /// One entry per cached blob.
    pub entries: serde_json::Value,
}

/// `POST /v1/cache/gc`: evict least recently used blobs down to `target` bytes (default:
/// 90% of the capacity).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    /// Bytes to keep at most.
    pub target: Option<u64>,
}
