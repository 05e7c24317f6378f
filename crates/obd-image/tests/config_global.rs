//! overlaybd.json: defaults of every key, every key set, legacy keys, errors and warnings.

use std::path::Path;

use obd_core::ErrorKind;
use obd_image::config::global::{CacheType, CredentialMode, DEFAULT_EXPORTER_PORT, GlobalConfig};

const NAME: &str = "/etc/overlaybd/overlaybd.json";

fn parse(text: &str) -> obd_image::Loaded<GlobalConfig> {
    GlobalConfig::parse(text, NAME).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn fails(text: &str, path: &str, what: &str) {
    let e = GlobalConfig::parse(text, NAME).expect_err(text);
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{NAME}: {path}: ")) && msg.contains(what),
        "{text}\n  got: {msg}\n  want: {path}: ...{what}"
    );
}

#[test]
fn defaults_of_every_key() {
    let l = parse("{}");
    assert!(l.warnings.is_empty());
    let g = l.value;
    assert_eq!(g, GlobalConfig::default());
    assert_eq!(g.log_config.log_level, 1);
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/var/log/overlaybd.log"))
    );
    assert_eq!(
        (g.log_config.log_size_mb, g.log_config.log_rotate_num),
        (10, 3)
    );
    let c = &g.cache_config;
    assert_eq!(c.cache_type, CacheType::File);
    assert_eq!(c.cache_dir, Path::new("/opt/overlaybd/registry_cache"));
    assert_eq!(
        (c.cache_size_gb, c.refill_size, c.block_size),
        (4, 262144, 65536)
    );
    let z = &g.gzip_cache_config;
    assert!(!z.enable);
    assert_eq!(z.cache_dir, Path::new("/opt/overlaybd/gzip_cache"));
    assert_eq!((z.cache_size_gb, z.refill_size), (4, 1 << 20));
    let cr = &g.credential_config;
    assert_eq!(cr.mode, CredentialMode::File);
    assert_eq!(cr.path, "/opt/overlaybd/cred.json");
    assert_eq!(cr.timeout, 1);
    assert_eq!(
        (
            &cr.client_cert_path,
            &cr.client_key_path,
            &cr.server_ca_path
        ),
        (&None, &None, &None)
    );
    assert_eq!(g.io_engine, 0);
    let d = &g.download;
    assert!(!d.enable);
    assert_eq!(
        (d.delay, d.delay_extra, d.max_mbps, d.try_cnt, d.block_size),
        (300, 30, 100, 5, 262144)
    );
    assert!(g.enable_audit);
    assert_eq!(
        g.audit_path.as_deref(),
        Some(Path::new("/var/log/overlaybd-audit.log"))
    );
    assert!(!g.enable_thread);
    assert!(!g.p2p_config.enable);
    assert_eq!(g.p2p_config.address, "http://localhost:9731/accelerator");
    let x = &g.exporter_config;
    assert!(!x.enable);
    assert_eq!(x.uri_prefix, "/metrics");
    assert_eq!(x.port, 9866);
    assert_eq!(DEFAULT_EXPORTER_PORT, 9866, "not the snapshotter's 9863");
    assert_eq!(x.update_interval, 60_000_000);
    assert_eq!(g.registry_fs_version, "v2");
    assert_eq!(g.prefetch_config.concurrency, 16);
    assert_eq!(
        (
            g.cert_config.cert_file.as_str(),
            g.cert_config.key_file.as_str()
        ),
        ("", "")
    );
    assert!(
        g.user_agent.starts_with("overlaybd-rs/"),
        "{}",
        g.user_agent
    );
    assert!(!g.service_config.enable);
    assert_eq!(g.service_config.address, "http://127.0.0.1:9862");
    assert_eq!(g.daemon.socket, Path::new("/run/overlaybd-rs/obd.sock"));
    assert_eq!(g.daemon.state_dir, Path::new("/var/lib/overlaybd-rs"));
}

#[test]
fn upstream_example_file_parses_cleanly() {
    // The shape of upstream's src/example_config/overlaybd.json.
    let l = parse(
        r#"{ "logConfig": { "logLevel": 1, "logPath": "/var/log/overlaybd.log" },
    "cacheConfig": { "cacheType": "file", "cacheDir": "/opt/overlaybd/registry_cache",
                     "cacheSizeGB": 4 },
    "gzipCacheConfig": { "enable": true, "cacheDir": "/opt/overlaybd/gzip_cache",
                         "cacheSizeGB": 4 },
    "credentialConfig": { "mode": "file", "path": "/opt/overlaybd/cred.json" },
    "ioEngine": 0,
    "download": { "enable": true, "delay": 600, "delayExtra": 30, "maxMBps": 100 },
    "p2pConfig": { "enable": false, "address": "localhost:19145/dadip2p" },
    "exporterConfig": { "enable": false, "uriPrefix": "/metrics", "port": 9863,
                        "updateInterval": 60000000 },
    "enableAudit": true, "auditPath": "/var/log/overlaybd-audit.log",
    "registryFsVersion": "v2" }"#,
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert!(l.gzip_cache_config.enable && l.download.enable);
    assert_eq!(l.download.delay, 600);
    assert_eq!(l.p2p_config.address, "localhost:19145/dadip2p");
    assert_eq!(l.exporter_config.port, 9863, "an explicit port is kept");
}

#[test]
fn every_key_set() {
    let g = parse(
        r#"{ "logConfig": {"logLevel": 0, "logPath": "/l/o.log", "logSizeMB": 5, "logRotateNum": 7},
    "cacheConfig": {"cacheType": "ocf", "cacheDir": "/c", "cacheSizeGB": 9, "refillSize": 4096,
                    "blockSize": 8192},
    "gzipCacheConfig": {"enable": true, "cacheDir": "/g", "cacheSizeGB": 2, "refillSize": 2048},
    "credentialConfig": {"mode": "https", "path": "https://cred", "timeout": 3,
                         "client_cert_path": "/cc", "client_key_path": "/ck",
                         "server_ca_path": "/ca"},
    "ioEngine": 2,
    "download": {"enable": true, "delay": 1, "delayExtra": 2, "maxMBps": 3, "tryCnt": 4,
                 "blockSize": 5},
    "enableAudit": false, "auditPath": "/a.log", "enableThread": true,
    "p2pConfig": {"enable": true, "address": "http://p2p"},
    "exporterConfig": {"enable": true, "uriPrefix": "/m", "port": 1234, "updateInterval": 5},
    "registryFsVersion": "v1",
    "prefetchConfig": {"concurrency": 3},
    "certConfig": {"certFile": "/cert", "keyFile": "/key"},
    "userAgent": "ua/1",
    "serviceConfig": {"enable": true, "address": "http://127.0.0.1:1"},
    "daemon": {"socket": "/s.sock", "stateDir": "/st"} }"#,
    );
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    let g = g.value;
    assert_eq!(
        (
            g.log_config.log_level,
            g.log_config.log_size_mb,
            g.log_config.log_rotate_num
        ),
        (0, 5, 7)
    );
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/l/o.log"))
    );
    let c = &g.cache_config;
    assert_eq!(c.cache_type, CacheType::Ocf);
    assert_eq!(
        (
            c.cache_dir.as_path(),
            c.cache_size_gb,
            c.refill_size,
            c.block_size
        ),
        (Path::new("/c"), 9, 4096, 8192)
    );
    assert!(g.gzip_cache_config.enable);
    assert_eq!(g.gzip_cache_config.cache_dir, Path::new("/g"));
    assert_eq!(
        (
            g.gzip_cache_config.cache_size_gb,
            g.gzip_cache_config.refill_size
        ),
        (2, 2048)
    );
    let cr = &g.credential_config;
    assert_eq!(
        (cr.mode, cr.path.as_str(), cr.timeout),
        (CredentialMode::Https, "https://cred", 3)
    );
    assert_eq!(cr.client_cert_path.as_deref(), Some(Path::new("/cc")));
    assert_eq!(cr.client_key_path.as_deref(), Some(Path::new("/ck")));
    assert_eq!(cr.server_ca_path.as_deref(), Some(Path::new("/ca")));
    assert_eq!(g.io_engine, 2);
    let d = &g.download;
    assert_eq!(
        (
            d.enable,
            d.delay,
            d.delay_extra,
            d.max_mbps,
            d.try_cnt,
            d.block_size
        ),
        (true, 1, 2, 3, 4, 5)
    );
    assert!(!g.enable_audit && g.enable_thread);
    assert_eq!(g.audit_path.as_deref(), Some(Path::new("/a.log")));
    assert!(g.p2p_config.enable);
    assert_eq!(g.p2p_config.address, "http://p2p");
    let x = &g.exporter_config;
    assert_eq!(
        (x.enable, x.uri_prefix.as_str(), x.port, x.update_interval),
        (true, "/m", 1234, 5)
    );
    assert_eq!(g.registry_fs_version, "v1");
    assert_eq!(g.prefetch_config.concurrency, 3);
    assert_eq!(
        (
            g.cert_config.cert_file.as_str(),
            g.cert_config.key_file.as_str()
        ),
        ("/cert", "/key")
    );
    assert_eq!(g.user_agent, "ua/1");
    assert!(g.service_config.enable);
    assert_eq!(g.service_config.address, "http://127.0.0.1:1");
    assert_eq!(g.daemon.socket, Path::new("/s.sock"));
    assert_eq!(g.daemon.state_dir, Path::new("/st"));
}

#[test]
fn legacy_keys_apply_when_the_new_ones_are_absent() {
    let l = parse(
        r#"{"logLevel": 2, "logPath": "/old.log", "cacheType": "download",
            "registryCacheDir": "/oldcache", "registryCacheSizeGB": 8,
            "credentialFilePath": "/old/cred.json"}"#,
    );
    let g = &l.value;
    assert_eq!(g.log_config.log_level, 2);
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/old.log"))
    );
    assert_eq!(g.cache_config.cache_type, CacheType::Download);
    assert_eq!(g.cache_config.cache_dir, Path::new("/oldcache"));
    assert_eq!(g.cache_config.cache_size_gb, 8);
    assert_eq!(g.credential_config.mode, CredentialMode::File);
    assert_eq!(g.credential_config.path, "/old/cred.json");
    assert_eq!(l.warnings.len(), 6, "{:?}", l.warnings);
    for (legacy, new) in [
        ("logLevel", "logConfig.logLevel"),
        ("logPath", "logConfig.logPath"),
        ("cacheType", "cacheConfig.cacheType"),
        ("registryCacheDir", "cacheConfig.cacheDir"),
        ("registryCacheSizeGB", "cacheConfig.cacheSizeGB"),
        ("credentialFilePath", "credentialConfig.path"),
    ] {
        let want = format!("{NAME}: {legacy}: legacy key, prefer {new}");
        assert!(
            l.warnings.contains(&want),
            "missing {want:?} in {:?}",
            l.warnings
        );
    }
}

#[test]
fn new_keys_win_over_legacy_ones() {
    let l = parse(
        r#"{"logLevel": 2, "logPath": "/old.log", "cacheType": "download",
            "registryCacheDir": "/oldcache", "registryCacheSizeGB": 8,
            "credentialFilePath": "/old/cred.json",
            "logConfig": {"logLevel": 3, "logPath": "/new.log"},
            "cacheConfig": {"cacheType": "file", "cacheDir": "/newcache", "cacheSizeGB": 8},
            "credentialConfig": {"path": "/new/cred.json"}}"#,
    );
    let g = &l.value;
    assert_eq!(g.log_config.log_level, 3);
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/new.log"))
    );
    assert_eq!(g.cache_config.cache_type, CacheType::File);
    assert_eq!(g.cache_config.cache_dir, Path::new("/newcache"));
    assert_eq!(g.credential_config.path, "/new/cred.json");
    // Differing values are noted; equal ones (cacheSizeGB 8) are not.
    assert_eq!(l.warnings.len(), 5, "{:?}", l.warnings);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.starts_with(&format!("{NAME}: registryCacheDir: legacy key ignored"))),
        "{:?}",
        l.warnings
    );
}

#[test]
fn log_path_empty_falls_back_to_legacy_then_default() {
    let g = parse(r#"{"logConfig": {"logPath": ""}}"#).value;
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/var/log/overlaybd.log"))
    );
    let g = parse(r#"{"logConfig": {"logPath": ""}, "logPath": "/legacy.log"}"#).value;
    assert_eq!(
        g.log_config.log_path.as_deref(),
        Some(Path::new("/legacy.log"))
    );
    let g = parse(r#"{"logPath": ""}"#).value;
    assert_eq!(
        g.log_config.log_path, None,
        "legacy \"\" turns the file log off"
    );
    let g = parse(r#"{"auditPath": ""}"#).value;
    assert_eq!(g.audit_path, None);
    let g = parse(r#"{"credentialConfig": {"mode": "uds", "path": "/run/cred.sock"}}"#).value;
    assert_eq!(g.credential_config.mode, CredentialMode::Uds);
    assert_eq!(g.credential_config.path, "/run/cred.sock");
}

#[test]
fn unknown_keys_are_warnings() {
    let l = parse(r#"{"fancy": 1, "logConfig": {"colour": true}, "daemon": {"x": []}}"#);
    let mut w = l.warnings.clone();
    w.sort();
    assert_eq!(
        w,
        [
            format!("{NAME}: daemon.x: unknown field, ignored"),
            format!("{NAME}: fancy: unknown field, ignored"),
            format!("{NAME}: logConfig.colour: unknown field, ignored"),
        ]
    );
    let l = parse(r#"{"registryFsVersion": "v9"}"#);
    assert_eq!(l.warnings.len(), 1);
    assert!(l.warnings[0].contains("registryFsVersion"));
}

#[test]
fn invalid_values_name_file_and_json_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"cacheConfig": {"cacheType": "ram"}}"#,
            "cacheConfig.cacheType",
            "unknown cache type",
        ),
        (r#"{"cacheType": "ram"}"#, "cacheType", "unknown cache type"),
        (r#"{"ioEngine": 3}"#, "ioEngine", "unknown I/O engine"),
        (r#"{"ioEngine": "psync"}"#, "ioEngine", "invalid type"),
        (
            r#"{"credentialConfig": {"mode": "ftp"}}"#,
            "credentialConfig.mode",
            "unknown credential mode",
        ),
        (
            r#"{"credentialConfig": {"mode": "http"}}"#,
            "credentialConfig.path",
            "needs a path",
        ),
        (
            r#"{"credentialConfig": {"timeout": "1s"}}"#,
            "credentialConfig.timeout",
            "invalid type",
        ),
        (
            r#"{"exporterConfig": {"port": 70000}}"#,
            "exporterConfig.port",
            "invalid value",
        ),
        (
            r#"{"download": {"maxMBps": "fast"}}"#,
            "download.maxMBps",
            "invalid type",
        ),
        (
            r#"{"download": {"blockSize": 0}}"#,
            "download.blockSize",
            "positive",
        ),
        (r#"{"enableAudit": "yes"}"#, "enableAudit", "invalid type"),
        (
            r#"{"logConfig": {"logLevel": -1}}"#,
            "logConfig.logLevel",
            "invalid value",
        ),
        (r#"{"logConfig": []}"#, "logConfig", "invalid type"),
        (
            r#"{"registryCacheSizeGB": "4"}"#,
            "registryCacheSizeGB",
            "invalid type",
        ),
        (
            r#"{"gzipCacheConfig": {"enable": 1}}"#,
            "gzipCacheConfig.enable",
            "invalid type",
        ),
        (
            r#"{"p2pConfig": {"address": 1}}"#,
            "p2pConfig.address",
            "invalid type",
        ),
        (
            r#"{"prefetchConfig": {"concurrency": 1.5}}"#,
            "prefetchConfig.concurrency",
            "invalid type",
        ),
        (
            r#"{"certConfig": {"certFile": false}}"#,
            "certConfig.certFile",
            "invalid type",
        ),
        (
            r#"{"serviceConfig": {"enable": "no"}}"#,
            "serviceConfig.enable",
            "invalid type",
        ),
        (
            r#"{"daemon": {"socket": 5}}"#,
            "daemon.socket",
            "invalid type",
        ),
        (r#"{"userAgent": 5}"#, "userAgent", "invalid type"),
        (r#"42"#, "(top level)", "invalid type"),
    ];
    for (text, path, what) in cases {
        fails(text, path, what);
    }
}

#[test]
fn load_or_default_handles_missing_invalid_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("overlaybd.json");
    let l = GlobalConfig::load_or_default(&missing).unwrap();
    assert_eq!(l.value, GlobalConfig::default());
    assert_eq!(l.warnings.len(), 1);
    assert!(l.warnings[0].contains("defaults") && l.warnings[0].contains("overlaybd.json"));
    assert_eq!(
        GlobalConfig::load(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    std::fs::write(&missing, r#"{"ioEngine": 1, "x": 0}"#).unwrap();
    let l = GlobalConfig::load_or_default(&missing).unwrap();
    assert_eq!(l.io_engine, 1);
    assert_eq!(
        l.warnings,
        [format!("{}: x: unknown field, ignored", missing.display())]
    );

    std::fs::write(&missing, r#"{"ioEngine": 9}"#).unwrap();
    let e = GlobalConfig::load_or_default(&missing).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: ioEngine:", missing.display())),
        "{e}"
    );

    // A directory where the file should be: unreadable, an error, not the defaults.
    let e = GlobalConfig::load_or_default(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains(&dir.path().display().to_string()),
        "{e}"
    );
}
