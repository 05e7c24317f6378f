//! The global service config, `/etc/overlaybd/overlaybd.json` (upstream `GlobalConfig`).
//!
//! Every key upstream reads is accepted, with upstream's **code** defaults for missing keys
//! (the example file upstream ships differs: it enables download and the gzip cache).
//!
//! Legacy top-level keys are still honoured. For each setting the value comes from, in
//! order: the new key if given (a non-empty string for paths and names), else the legacy
//! key if given, else the default:
//!
//! | setting | new key | legacy key | default |
//! |---|---|---|---|
//! | log level | `logConfig.logLevel` | `logLevel` | 1 (INFO) |
//! | log file | `logConfig.logPath` | `logPath` (`""` disables the file log) | `/var/log/overlaybd.log` |
//! | cache type | `cacheConfig.cacheType` | `cacheType` | `file` |
//! | cache dir | `cacheConfig.cacheDir` | `registryCacheDir` | `/opt/overlaybd/registry_cache` |
//! | cache size | `cacheConfig.cacheSizeGB` | `registryCacheSizeGB` | 4 |
//! | credentials | `credentialConfig.mode` / `.path` | `credentialFilePath` (mode `file`) | file `/opt/overlaybd/cred.json` |
//!
//! (Upstream switches whole groups: a non-empty `cacheConfig.cacheType` makes it read
//! `cacheConfig.cacheDir` even when only `registryCacheDir` is set. Resolving key by key
//! gives the same result for every config that sets its keys consistently, and the
//! intuitive one for those that do not.) Using a legacy key, or setting both spellings,
//! adds a warning.
//!
//! overlaybd-rs adds two blocks of its own, `daemon` ([`DaemonConfig`]) and `registry`
//! ([`RegistryConfig`]), and moves the
//! metrics port default to 9866 ([`DEFAULT_EXPORTER_PORT`]).

use std::path::{Path, PathBuf};

use obd_core::{ErrorKind, Result};
use serde::Serialize;

pub use super::global_blocks::{
    CertConfig, DEFAULT_EXPORTER_PORT, DaemonConfig, DownloadConfig, ExporterConfig,
    GzipCacheConfig, P2pConfig, PrefetchConfig, RegistryConfig, RegistryHostConfig, ServiceConfig,
};
use super::global_raw::{RawGlobal, Resolver};
use super::{Loaded, config_error, parse_json, read_text};

/// Where upstream and `obd` look for the global config by default.
pub const DEFAULT_GLOBAL_CONFIG_PATH: &str = "/etc/overlaybd/overlaybd.json";

/// The global service configuration, legacy keys resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalConfig {
    /// Logging.
    pub log_config: LogConfig,
    /// Registry blob cache.
    pub cache_config: CacheConfig,
    /// Decompressed-gzip cache (TurboOCI).
    pub gzip_cache_config: GzipCacheConfig,
    /// Registry credentials.
    pub credential_config: CredentialConfig,
    /// Local file I/O engine: 0 psync, 1 libaio, 2 posix aio. Default 0.
    pub io_engine: u32,
    /// Background download defaults for devices whose config has no `download` block.
    pub download: DownloadConfig,
    /// Write the audit log. Default `true`.
    pub enable_audit: bool,
    /// Audit log file. Default `/var/log/overlaybd-audit.log`; `None` (`""`) disables it.
    pub audit_path: Option<PathBuf>,
    /// One OS thread per device (upstream). Default `false`.
    pub enable_thread: bool,
    /// P2P proxy.
    pub p2p_config: P2pConfig,
    /// Prometheus endpoint.
    pub exporter_config: ExporterConfig,
    /// Registry client version, `v1` or `v2`. Default `v2`.
    pub registry_fs_version: String,
    /// Trace replay.
    pub prefetch_config: PrefetchConfig,
    /// Registry TLS client certificate.
    pub cert_config: CertConfig,
    /// HTTP `User-Agent`. Default `overlaybd-rs/<version>` (upstream: `overlaybd/<version>`).
    pub user_agent: String,
    /// Live-snapshot API server.
    pub service_config: ServiceConfig,
    /// overlaybd-rs daemon control socket and state.
    pub daemon: DaemonConfig,
    /// overlaybd-rs registry client settings (timeouts, retries, per-host TLS).
    pub registry: RegistryConfig,
}

/// Logging (`logConfig`, legacy `logLevel` / `logPath`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    /// 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR. Default 1.
    pub log_level: u32,
    /// Log file; `None` logs to stderr only. Default `/var/log/overlaybd.log`.
    pub log_path: Option<PathBuf>,
    /// Rotate at this size, MiB. Default 10.
    #[serde(rename = "logSizeMB")]
    pub log_size_mb: u32,
    /// Rotated files kept. Default 3.
    pub log_rotate_num: u32,
}

/// Kinds of registry blob cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheType {
    /// A local file cache (default).
    File,
    /// Open CAS Framework cache.
    Ocf,
    /// Download cache.
    Download,
}

impl CacheType {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::File => "file",
            CacheType::Ocf => "ocf",
            CacheType::Download => "download",
        }
    }
}

/// Registry blob cache (`cacheConfig`, legacy `cacheType` / `registryCacheDir` /
/// `registryCacheSizeGB`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// Default [`CacheType::File`].
    pub cache_type: CacheType,
    /// Default `/opt/overlaybd/registry_cache`.
    pub cache_dir: PathBuf,
    /// Default 4.
    #[serde(rename = "cacheSizeGB")]
    pub cache_size_gb: u32,
    /// Fill granularity from the source, bytes. Default 262144.
    pub refill_size: u32,
    /// OCF block size, bytes. Default 65536.
    pub block_size: u32,
}

/// Where registry credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialMode {
    /// A docker-config style JSON file (default).
    File,
    /// An HTTP endpoint.
    Http,
    /// An HTTPS endpoint (optionally mTLS).
    Https,
    /// A unix socket.
    Uds,
}

/// Registry credentials (`credentialConfig`, legacy `credentialFilePath`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialConfig {
    /// Default [`CredentialMode::File`].
    pub mode: CredentialMode,
    /// File path, URL or socket path. Default (file mode) `/opt/overlaybd/cred.json`.
    pub path: String,
    /// Request timeout in seconds (http, https, uds). Default 1.
    pub timeout: u32,
    /// https mTLS client certificate.
    pub client_cert_path: Option<PathBuf>,
    /// https mTLS client key.
    pub client_key_path: Option<PathBuf>,
    /// With it set, only this CA is trusted for the credential server.
    pub server_ca_path: Option<PathBuf>,
}

const DEFAULT_CRED_FILE: &str = "/opt/overlaybd/cred.json";

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            log_config: LogConfig {
                log_level: 1,
                log_path: Some("/var/log/overlaybd.log".into()),
                log_size_mb: 10,
                log_rotate_num: 3,
            },
            cache_config: CacheConfig {
                cache_type: CacheType::File,
                cache_dir: "/opt/overlaybd/registry_cache".into(),
                cache_size_gb: 4,
                refill_size: 262_144,
                block_size: 65_536,
            },
            gzip_cache_config: GzipCacheConfig::default(),
            credential_config: CredentialConfig {
                mode: CredentialMode::File,
                path: DEFAULT_CRED_FILE.into(),
                timeout: 1,
                client_cert_path: None,
                client_key_path: None,
                server_ca_path: None,
            },
            io_engine: 0,
            download: DownloadConfig::default(),
            enable_audit: true,
            audit_path: Some("/var/log/overlaybd-audit.log".into()),
            enable_thread: false,
            p2p_config: P2pConfig::default(),
            exporter_config: ExporterConfig::default(),
            registry_fs_version: "v2".into(),
            prefetch_config: PrefetchConfig::default(),
            cert_config: CertConfig::default(),
            user_agent: concat!("overlaybd-rs/", env!("CARGO_PKG_VERSION")).into(),
            service_config: ServiceConfig::default(),
            daemon: DaemonConfig::default(),
            registry: RegistryConfig::default(),
        }
    }
}

impl GlobalConfig {
    /// Read and parse the global config at `path` (which must exist).
    pub fn load(path: &Path) -> Result<Loaded<GlobalConfig>> {
        let text = read_text(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// [`GlobalConfig::load`], or the built-in defaults (with a warning saying so) when
    /// `path` does not exist. An unreadable or invalid file is an error.
    pub fn load_or_default(path: &Path) -> Result<Loaded<GlobalConfig>> {
        match read_text(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Loaded {
                value: GlobalConfig::default(),
                warnings: vec![format!(
                    "{}: not found, using the built-in defaults",
                    path.display()
                )],
            }),
            Err(e) => Err(e),
        }
    }

    /// Parse config text; `name` (usually the file path) is used in errors and warnings.
    pub fn parse(text: &str, name: &str) -> Result<Loaded<GlobalConfig>> {
        let (raw, mut warnings): (RawGlobal, _) = parse_json(text, name)?;
        let value = resolve(raw, name, &mut warnings)?;
        Ok(Loaded { value, warnings })
    }
}

fn resolve(raw: RawGlobal, name: &str, warnings: &mut Vec<String>) -> Result<GlobalConfig> {
    let d = GlobalConfig::default();
    let mut r = Resolver { name, warnings };

    let (log_level, _) = r.pick(
        ("logConfig.logLevel", raw.log_config.log_level),
        ("logLevel", raw.log_level),
        d.log_config.log_level,
    );
    let (log_path, _) = r.pick(
        ("logConfig.logPath", raw.log_config.log_path),
        ("logPath", raw.log_path),
        "/var/log/overlaybd.log".to_string(),
    );
    let (cache_type, cache_type_key) = r.pick(
        ("cacheConfig.cacheType", raw.cache_config.cache_type),
        ("cacheType", raw.cache_type),
        "file".to_string(),
    );
    let cache_type = match cache_type.as_str() {
        "file" => CacheType::File,
        "ocf" => CacheType::Ocf,
        "download" => CacheType::Download,
        other => {
            return Err(config_error(
                name,
                &cache_type_key,
                format!("unknown cache type \"{other}\" (use file, ocf or download)"),
            ));
        }
    };
    let (cache_dir, _) = r.pick(
        (
            "cacheConfig.cacheDir",
            raw.cache_config.cache_dir.map(PathBuf::from),
        ),
        (
            "registryCacheDir",
            raw.registry_cache_dir.map(PathBuf::from),
        ),
        d.cache_config.cache_dir,
    );
    let (cache_size_gb, _) = r.pick(
        ("cacheConfig.cacheSizeGB", raw.cache_config.cache_size_gb),
        ("registryCacheSizeGB", raw.registry_cache_size_gb),
        d.cache_config.cache_size_gb,
    );

    let rc = raw.credential_config;
    let mode = match rc.mode.as_deref() {
        None | Some("file") => CredentialMode::File,
        Some("http") => CredentialMode::Http,
        Some("https") => CredentialMode::Https,
        Some("uds") => CredentialMode::Uds,
        Some(other) => {
            return Err(config_error(
                name,
                "credentialConfig.mode",
                format!("unknown credential mode \"{other}\" (use file, http, https or uds)"),
            ));
        }
    };
    let path = if mode == CredentialMode::File {
        r.pick(
            ("credentialConfig.path", rc.path),
            ("credentialFilePath", raw.credential_file_path),
            DEFAULT_CRED_FILE.to_string(),
        )
        .0
    } else {
        rc.path.ok_or_else(|| {
            config_error(
                name,
                "credentialConfig.path",
                "the credential mode needs a path (URL or socket)",
            )
        })?
    };

    let io_engine = raw.io_engine.unwrap_or(d.io_engine);
    if io_engine > 2 {
        return Err(config_error(
            name,
            "ioEngine",
            format!("unknown I/O engine {io_engine} (0 psync, 1 libaio, 2 posix aio)"),
        ));
    }
    check_download(&raw.download, name, "download")?;
    if raw.registry.timeout_secs == 0 {
        return Err(config_error(
            name,
            "registry.timeoutSecs",
            "must be at least 1 second",
        ));
    }
    let registry_fs_version = raw.registry_fs_version.unwrap_or(d.registry_fs_version);
    if registry_fs_version != "v1" && registry_fs_version != "v2" {
        r.warnings.push(format!(
            "{name}: registryFsVersion: unknown version \"{registry_fs_version}\", v2 is used"
        ));
    }
    Ok(GlobalConfig {
        log_config: LogConfig {
            log_level,
            log_path: (!log_path.is_empty()).then(|| log_path.into()),
            log_size_mb: raw
                .log_config
                .log_size_mb
                .unwrap_or(d.log_config.log_size_mb),
            log_rotate_num: raw
                .log_config
                .log_rotate_num
                .unwrap_or(d.log_config.log_rotate_num),
        },
        cache_config: CacheConfig {
            cache_type,
            cache_dir,
            cache_size_gb,
            refill_size: raw
                .cache_config
                .refill_size
                .unwrap_or(d.cache_config.refill_size),
            block_size: raw
                .cache_config
                .block_size
                .unwrap_or(d.cache_config.block_size),
        },
        gzip_cache_config: raw.gzip_cache_config,
        credential_config: CredentialConfig {
            mode,
            path,
            timeout: rc.timeout.unwrap_or(d.credential_config.timeout),
            client_cert_path: rc.client_cert_path.map(Into::into),
            client_key_path: rc.client_key_path.map(Into::into),
            server_ca_path: rc.server_ca_path.map(Into::into),
        },
        io_engine,
        download: raw.download,
        enable_audit: raw.enable_audit.unwrap_or(d.enable_audit),
        audit_path: match raw.audit_path {
            None => d.audit_path,
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p.into()),
        },
        enable_thread: raw.enable_thread,
        p2p_config: raw.p2p_config,
        exporter_config: raw.exporter_config,
        registry_fs_version,
        prefetch_config: raw.prefetch_config,
        cert_config: raw.cert_config,
        user_agent: raw.user_agent.unwrap_or(d.user_agent),
        service_config: raw.service_config,
        daemon: raw.daemon,
        registry: raw.registry,
    })
}

/// Values of a `download` block that cannot work.
pub(crate) fn check_download(d: &DownloadConfig, name: &str, at: &str) -> Result<()> {
    if d.block_size == 0 {
        return Err(config_error(
            name,
            &format!("{at}.blockSize"),
            "must be a positive number of bytes",
        ));
    }
    if d.try_cnt == 0 {
        return Err(config_error(
            name,
            &format!("{at}.tryCnt"),
            "must be at least 1",
        ));
    }
    Ok(())
}
