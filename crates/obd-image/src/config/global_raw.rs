//! The global config as written in the file: every key optional, legacy keys included;
//! and the rule that picks between a new key and its legacy spelling.

use serde::Deserialize;

use super::global_blocks::{
    CertConfig, DaemonConfig, DownloadConfig, ExporterConfig, GzipCacheConfig, P2pConfig,
    PrefetchConfig, RegistryConfig, ServiceConfig,
};
use super::{object, opt_string};

/// The file as written: every key optional, legacy keys included.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawGlobal {
    #[serde(deserialize_with = "object")]
    pub(super) log_config: RawLog,
    #[serde(deserialize_with = "object")]
    pub(super) cache_config: RawCache,
    #[serde(deserialize_with = "object")]
    pub(super) gzip_cache_config: GzipCacheConfig,
    #[serde(deserialize_with = "object")]
    pub(super) credential_config: RawCredential,
    pub(super) io_engine: Option<u32>,
    #[serde(deserialize_with = "object")]
    pub(super) download: DownloadConfig,
    pub(super) enable_audit: Option<bool>,
    pub(super) audit_path: Option<String>,
    pub(super) enable_thread: bool,
    #[serde(deserialize_with = "object")]
    pub(super) p2p_config: P2pConfig,
    #[serde(deserialize_with = "object")]
    pub(super) exporter_config: ExporterConfig,
    #[serde(deserialize_with = "opt_string")]
    pub(super) registry_fs_version: Option<String>,
    #[serde(deserialize_with = "object")]
    pub(super) prefetch_config: PrefetchConfig,
    #[serde(deserialize_with = "object")]
    pub(super) cert_config: CertConfig,
    #[serde(deserialize_with = "opt_string")]
    pub(super) user_agent: Option<String>,
    #[serde(deserialize_with = "object")]
    pub(super) service_config: ServiceConfig,
    #[serde(deserialize_with = "object")]
    pub(super) daemon: DaemonConfig,
    pub(super) registry: RegistryConfig,
    // Legacy keys.
    pub(super) log_level: Option<u32>,
    pub(super) log_path: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) cache_type: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) registry_cache_dir: Option<String>,
    #[serde(rename = "registryCacheSizeGB")]
    pub(super) registry_cache_size_gb: Option<u32>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) credential_file_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawLog {
    pub(super) log_level: Option<u32>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) log_path: Option<String>,
    #[serde(rename = "logSizeMB")]
    pub(super) log_size_mb: Option<u32>,
    pub(super) log_rotate_num: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawCache {
    #[serde(deserialize_with = "opt_string")]
    pub(super) cache_type: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) cache_dir: Option<String>,
    #[serde(rename = "cacheSizeGB")]
    pub(super) cache_size_gb: Option<u32>,
    pub(super) refill_size: Option<u32>,
    pub(super) block_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawCredential {
    #[serde(deserialize_with = "opt_string")]
    pub(super) mode: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) path: Option<String>,
    pub(super) timeout: Option<u32>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) client_cert_path: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) client_key_path: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub(super) server_ca_path: Option<String>,
}

/// Picks new key > legacy key > default, noting legacy use in the warnings.
pub(super) struct Resolver<'a> {
    pub(super) name: &'a str,
    pub(super) warnings: &'a mut Vec<String>,
}

impl Resolver<'_> {
    pub(super) fn pick<T: PartialEq + std::fmt::Debug>(
        &mut self,
        new: (&str, Option<T>),
        legacy: (&str, Option<T>),
        default: T,
    ) -> (T, String) {
        match (new.1, legacy.1) {
            (Some(n), Some(l)) => {
                if n != l {
                    self.warnings.push(format!(
                        "{}: {}: legacy key ignored ({:?}), {} ({:?}) is used",
                        self.name, legacy.0, l, new.0, n
                    ));
                }
                (n, new.0.to_string())
            }
            (Some(n), None) => (n, new.0.to_string()),
            (None, Some(l)) => {
                self.warnings.push(format!(
                    "{}: {}: legacy key, prefer {}",
                    self.name, legacy.0, new.0
                ));
                (l, legacy.0.to_string())
            }
            (None, None) => (default, new.0.to_string()),
        }
    }
}
