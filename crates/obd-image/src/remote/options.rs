//! Global config → registry client and cache options.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use obd_cache::CacheOptions;
use obd_core::{Error, Result};
use obd_registry::{
    CredentialProvider, FileCredentials, HostOptions, HttpCredentials, HttpMode, RegistryOptions,
    docker_config_path,
};

use crate::config::global::{CacheType, CredentialMode, GlobalConfig};

/// Registry client options from the global config: `registry` (timeouts, retries, per-host
/// TLS), `certConfig`, `p2pConfig`, `userAgent` and the credential providers —
/// `credentialConfig` first, then the docker `config.json` unless `registry.dockerConfig`
/// is false.
pub fn registry_options(g: &GlobalConfig, warnings: &mut Vec<String>) -> Result<RegistryOptions> {
    let mut o = RegistryOptions {
        timeout: Duration::from_secs(u64::from(g.registry.timeout_secs)),
        retries: g.registry.retries,
        user_agent: g.user_agent.clone(),
        ..RegistryOptions::default()
    };
    let c = &g.cert_config;
    match (c.cert_file.is_empty(), c.key_file.is_empty()) {
        (true, true) => {}
        (false, false) => {
            o.client_cert = Some((PathBuf::from(&c.cert_file), PathBuf::from(&c.key_file)));
        }
        _ => {
            return Err(Error::invalid_input(
                "certConfig: set both certFile and keyFile, or neither",
            ));
        }
    }
    for (host, h) in &g.registry.hosts {
        o.hosts.insert(
            host.clone(),
            HostOptions {
                insecure: h.insecure,
                ca_file: h.ca_file.clone(),
            },
        );
    }
    if g.p2p_config.enable {
        o.p2p_prefix = Some(g.p2p_config.address.clone());
    }
    let cc = &g.credential_config;
    let timeout = Duration::from_secs(u64::from(cc.timeout.max(1)));
    let provider: Option<Arc<dyn CredentialProvider>> = match cc.mode {
        CredentialMode::File if cc.path.is_empty() => None,
        CredentialMode::File => Some(Arc::new(FileCredentials::new(PathBuf::from(&cc.path)))),
        mode => {
            let m = match mode {
                CredentialMode::Http => HttpMode::Http,
                CredentialMode::Https => HttpMode::Https,
                _ => HttpMode::Uds,
            };
            let cert = match (&cc.client_cert_path, &cc.client_key_path) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => None,
            };
            Some(Arc::new(HttpCredentials::new(
                m,
                cc.path.clone(),
                timeout,
                cert,
                cc.server_ca_path.clone(),
            )))
        }
    };
    o.credentials.extend(provider);
    if g.registry.docker_config
        && let Some(p) = docker_config_path()
    {
        o.credentials.push(Arc::new(FileCredentials::new(p)));
    }
    if g.registry_fs_version != "v2" {
        warnings.push(format!(
            "registryFsVersion \"{}\": overlaybd-rs has one registry client; the setting is \
             ignored",
            g.registry_fs_version
        ));
    }
    Ok(o)
}

/// Cache options from `cacheConfig`. `ocf` and `download` cache types fall back to the file
/// cache with a warning. (Upstream bypasses its cache when a P2P proxy is used; here blobs
/// fetched through the proxy are cached like any other.)
pub fn cache_options(g: &GlobalConfig, warnings: &mut Vec<String>) -> CacheOptions {
    let c = &g.cache_config;
    if c.cache_type != CacheType::File {
        warnings.push(format!(
            "cacheConfig.cacheType \"{}\" is not implemented; the file cache in {} is used",
            c.cache_type.as_str(),
            c.cache_dir.display()
        ));
    }
    CacheOptions {
        dir: c.cache_dir.clone(),
        capacity: u64::from(c.cache_size_gb) << 30,
        refill: c.refill_size,
    }
}
