//! The blocks of the global config that have no legacy spelling: each parses with upstream's
//! code defaults for every missing key (`#[serde(default)]` + `Default`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Background full-blob download (`download`, globally and per device). Defaults are
/// upstream's code defaults (the shipped example file enables it with delay 600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DownloadConfig {
    /// Download remote layers into their `dir` in the background. Default `false`.
    pub enable: bool,
    /// Seconds to wait after the device opens. Default 300.
    pub delay: u32,
    /// Random extra delay, up to this many seconds. Default 30.
    pub delay_extra: u32,
    /// Throughput limit per download, MB/s. Default 100.
    #[serde(rename = "maxMBps")]
    pub max_mbps: u32,
    /// Attempts per layer. Default 5.
    pub try_cnt: u32,
    /// Read size in bytes. Default 262144.
    pub block_size: u32,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            enable: false,
            delay: 300,
            delay_extra: 30,
            max_mbps: 100,
            try_cnt: 5,
            block_size: 262_144,
        }
    }
}

/// Cache of decompressed gzip data for TurboOCI layers (`gzipCacheConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GzipCacheConfig {
    /// Default `false`.
    pub enable: bool,
    /// Default `/opt/overlaybd/gzip_cache`.
    pub cache_dir: PathBuf,
    /// Default 4.
    #[serde(rename = "cacheSizeGB")]
    pub cache_size_gb: u32,
    /// Fill granularity in bytes. Default 1 MiB.
    pub refill_size: u32,
}

impl Default for GzipCacheConfig {
    fn default() -> Self {
        GzipCacheConfig {
            enable: false,
            cache_dir: "/opt/overlaybd/gzip_cache".into(),
            cache_size_gb: 4,
            refill_size: 1 << 20,
        }
    }
}

/// P2P proxy prefix for blob reads (`p2pConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct P2pConfig {
    /// Default `false`.
    pub enable: bool,
    /// Default `http://localhost:9731/accelerator`.
    pub address: String,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            enable: false,
            address: "http://localhost:9731/accelerator".into(),
        }
    }
}

/// Our default metrics port. Upstream's is 9863, which collides with the snapshotter's own
/// exporter default (also 9863); 9866 avoids that.
pub const DEFAULT_EXPORTER_PORT: u16 = 9866;

/// Prometheus metrics endpoint (`exporterConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExporterConfig {
    /// Default `false`.
    pub enable: bool,
    /// Default `/metrics`.
    pub uri_prefix: String,
    /// Default [`DEFAULT_EXPORTER_PORT`] (9866; upstream 9863 collides with the snapshotter's
    /// exporter).
    pub port: u16,
    /// Update interval in microseconds. Default 60,000,000.
    pub update_interval: u64,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            enable: false,
            uri_prefix: "/metrics".into(),
            port: DEFAULT_EXPORTER_PORT,
            update_interval: 60_000_000,
        }
    }
}

/// Trace replay (`prefetchConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrefetchConfig {
    /// Replay workers. Default 16.
    pub concurrency: u32,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig { concurrency: 16 }
    }
}

/// TLS client certificate for registry connections (`certConfig`). Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CertConfig {
    /// PEM certificate file. Default `""`.
    pub cert_file: String,
    /// PEM key file. Default `""`.
    pub key_file: String,
}

/// The live-snapshot API server (`serviceConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Default `false`.
    pub enable: bool,
    /// Default `http://127.0.0.1:9862`.
    pub address: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            enable: false,
            address: "http://127.0.0.1:9862".into(),
        }
    }
}

/// overlaybd-rs's own block (`daemon`): where `obd serve` keeps its control socket and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DaemonConfig {
    /// Control socket. Default `/run/overlaybd-rs/obd.sock`.
    pub socket: PathBuf,
    /// State directory. Default `/var/lib/overlaybd-rs`.
    pub state_dir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: "/run/overlaybd-rs/obd.sock".into(),
            state_dir: "/var/lib/overlaybd-rs".into(),
        }
    }
}

/// overlaybd-rs's own block (`registry`): how the registry client behaves. Upstream has
/// fixed values (30 s per read, 3 retries) and no per-host TLS settings.
///
/// ```json
/// "registry": {
///   "timeoutSecs": 30, "retries": 3, "dockerConfig": true,
///   "hosts": { "registry.local:5000": { "insecure": false, "caFile": "/etc/ssl/my-ca.pem" } }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// One deadline per read, retries included, in seconds. Default 30.
    pub timeout_secs: u32,
    /// Extra attempts after a failed range request. Default 3.
    pub retries: u32,
    /// Also take credentials from the docker `config.json` (`$DOCKER_CONFIG` or
    /// `~/.docker/config.json`) when `credentialConfig` has none. Default `true`.
    pub docker_config: bool,
    /// Per-host TLS settings, keyed `host` or `host:port`.
    pub hosts: std::collections::BTreeMap<String, RegistryHostConfig>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            timeout_secs: 30,
            retries: 3,
            docker_config: true,
            hosts: Default::default(),
        }
    }
}

/// TLS settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RegistryHostConfig {
    /// Do not verify the server certificate. Default `false`; a warning is logged.
    pub insecure: bool,
    /// An extra CA certificate (PEM) trusted for this host.
    pub ca_file: Option<PathBuf>,
}
