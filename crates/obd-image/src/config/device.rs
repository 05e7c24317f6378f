//! The per-device config, `config.v1.json` (upstream `ImageConfig`), as the snapshotter
//! writes it:
//!
//! ```json
//! { "repoBlobUrl": "https://registry-1.docker.io/v2/overlaybd/redis/blobs",
//!   "lowers": [ { "file": "/opt/overlaybd/baselayers/ext4_64" },
//!               { "digest": "sha256:…", "size": 4739584, "dir": "/var/lib/…/12/fs" } ],
//!   "upper": { "index": "…/writable_index", "data": "…/writable_data" },
//!   "resultFile": "…/block/init-debug.log",
//!   "download": { "enable": true, "delay": 600 },
//!   "accelerationLayer": false,
//!   "recordTracePath": "" }
//! ```
//!
//! Empty strings mean "not set", as upstream's defaults are `""`. Besides type checks,
//! [`DeviceConfig::parse`] checks what cannot work: more than 255 lowers, a lower with none of
//! `file` / `dir` / `digest`, a malformed digest, an upper with only one of `index` / `data`,
//! `accelerationLayer` with a `recordTracePath`, and a config with neither lowers nor upper.

use std::path::{Path, PathBuf};

use obd_core::Result;
use serde::{Deserialize, Serialize};

use super::global::{DownloadConfig, GlobalConfig, check_download};
use super::{
    Loaded, config_error, is_sha256_digest, objects, opt_object, opt_path, opt_string, parse_json,
    read_text,
};

/// Most lowers a device may have (upstream's stack limit).
pub const MAX_LOWERS: usize = 255;

/// A per-device config (`config.v1.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceConfig {
    /// `https://host/v2/<repo>/blobs`; a blob's URL is `<repoBlobUrl>/<digest>`. Needed for
    /// remote lowers.
    #[serde(
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub repo_blob_url: Option<String>,
    /// Read-only layers, bottom to top.
    #[serde(deserialize_with = "objects")]
    pub lowers: Vec<LowerConfig>,
    /// The writable layer; none (or one with neither file) means a read-only device.
    #[serde(
        deserialize_with = "opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub upper: Option<UpperConfig>,
    /// Where the service writes `success` or `failed:<reason>`.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub result_file: Option<PathBuf>,
    /// Per-device background download settings; `None`: the global `download` block applies
    /// (see [`DeviceConfig::effective_download`]).
    #[serde(
        deserialize_with = "opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub download: Option<DownloadConfig>,
    /// The last lower is an acceleration layer (an OCI tar holding a `trace` file), not part
    /// of the block device.
    pub acceleration_layer: bool,
    /// Trace file to record or replay; `None` (`""`) is off.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub record_trace_path: Option<PathBuf>,
}

/// One lower layer. Local sources are tried first: `file`, then `dir`; then the registry
/// by `digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LowerConfig {
    /// A local layer file (tar, ZFile or LSMT, detected). In TurboOCI the fs-meta file.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Layer directory: searched for `overlaybd.commit`, `.commit`, `overlaybd.sealed`.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Remote blob digest, `sha256:<64 hex>`.
    #[serde(
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub digest: Option<String>,
    /// Remote blob size in bytes (0: unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// TurboOCI: local OCI tar(.gz) data source.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub target_file: Option<PathBuf>,
    /// TurboOCI: remote data source digest.
    #[serde(
        deserialize_with = "opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_digest: Option<String>,
    /// TurboOCI: gzip index of the data source.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub gzip_index: Option<PathBuf>,
}

/// The writable upper layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UpperConfig {
    /// Index file (append layers; sparse layers have an empty one).
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub index: Option<PathBuf>,
    /// Data file.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// TurboOCI build mode: target tar.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// TurboOCI build mode: gzip index.
    #[serde(deserialize_with = "opt_path", skip_serializing_if = "Option::is_none")]
    pub gzip_index: Option<PathBuf>,
    /// Written by the snapshotter; ignored (the layer's header has the size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsize: Option<u64>,
}

impl UpperConfig {
    /// `(data, index)` when both are set.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.data.as_deref()?, self.index.as_deref()?))
    }
}

/// File names searched in a lower's `dir`, in order.
pub const DIR_LAYER_NAMES: [&str; 3] = ["overlaybd.commit", ".commit", "overlaybd.sealed"];

/// Local files of a device: the lowers bottom to top, and the upper's (data, index).
pub type LayerFiles = (Vec<PathBuf>, Option<(PathBuf, PathBuf)>);

impl DeviceConfig {
    /// Read, parse and check the config at `path`.
    pub fn load(path: &Path) -> Result<Loaded<DeviceConfig>> {
        let text = read_text(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check config text; `name` (usually the file path) is used in errors and
    /// warnings.
    pub fn parse(text: &str, name: &str) -> Result<Loaded<DeviceConfig>> {
        let (value, warnings): (DeviceConfig, _) = parse_json(text, name)?;
        value.validate(name)?;
        Ok(Loaded { value, warnings })
    }

    /// Check the rules no type can express; errors name `name` and the JSON path.
    pub fn validate(&self, name: &str) -> Result<()> {
        if self.lowers.len() > MAX_LOWERS {
            return Err(config_error(
                name,
                "lowers",
                format!(
                    "{} layers, more than the {MAX_LOWERS} a device can stack",
                    self.lowers.len()
                ),
            ));
        }
        if let Some(url) = &self.repo_blob_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(config_error(
                name,
                "repoBlobUrl",
                format!("\"{url}\" is not an http(s) URL (https://host/v2/<repo>/blobs)"),
            ));
        }
        for (i, l) in self.lowers.iter().enumerate() {
            if l.file.is_none() && l.dir.is_none() && l.digest.is_none() {
                return Err(config_error(
                    name,
                    &format!("lowers[{i}]"),
                    "a lower needs \"file\", \"dir\" or \"digest\"",
                ));
            }
            for (key, d) in [("digest", &l.digest), ("targetDigest", &l.target_digest)] {
                if let Some(d) = d
                    && !is_sha256_digest(d)
                {
                    return Err(config_error(
                        name,
                        &format!("lowers[{i}].{key}"),
                        format!("\"{d}\" is not a digest of the form sha256:<64 lower-case hex>"),
                    ));
                }
            }
        }
        if let Some(u) = &self.upper
            && u.index.is_some() != u.data.is_some()
        {
            let missing = if u.index.is_none() { "index" } else { "data" };
            return Err(config_error(
                name,
                &format!("upper.{missing}"),
                "a writable upper needs both \"index\" and \"data\"",
            ));
        }
        if let Some(d) = &self.download {
            check_download(d, name, "download")?;
        }
        if self.acceleration_layer {
            if self.record_trace_path.is_some() {
                return Err(config_error(
                    name,
                    "recordTracePath",
                    "cannot be combined with \"accelerationLayer\": true",
                ));
            }
            if self.lowers.is_empty() {
                return Err(config_error(
                    name,
                    "accelerationLayer",
                    "set, but there are no lowers (the acceleration layer is the last lower)",
                ));
            }
        }
        if self.block_lowers().is_empty() && !self.has_upper() {
            return Err(config_error(
                name,
                "lowers",
                "no layers: a device needs lowers, an upper, or both",
            ));
        }
        Ok(())
    }

    /// Whether the config names a writable upper (both files).
    pub fn has_upper(&self) -> bool {
        self.upper.as_ref().is_some_and(|u| u.files().is_some())
    }

    /// The lowers that make up the block device: all of them, or all but the last when it
    /// is an acceleration layer.
    pub fn block_lowers(&self) -> &[LowerConfig] {
        match (self.acceleration_layer, self.lowers.split_last()) {
            (true, Some((_, rest))) => rest,
            _ => &self.lowers,
        }
    }

    /// The download settings for this device: its own block, or else the global one.
    pub fn effective_download<'a>(&'a self, global: &'a GlobalConfig) -> &'a DownloadConfig {
        self.download.as_ref().unwrap_or(&global.download)
    }

    /// Resolve the block lowers to local files (`file`, else the first of
    /// [`DIR_LAYER_NAMES`] found in `dir`) and the upper to (data, index), for tools that
    /// work on local files only. Remote-only lowers are an error naming `lowers[i]`.
    pub fn layer_files(&self) -> Result<LayerFiles> {
        let mut lowers = Vec::new();
        for (i, l) in self.block_lowers().iter().enumerate() {
            match crate::source::local_file(l) {
                Some(p) => lowers.push(p),
                None => {
                    return Err(obd_core::Error::new(
                        obd_core::ErrorKind::NotFound,
                        format!(
                            "lowers[{i}]: no local layer file{}",
                            l.digest
                                .as_deref()
                                .map(|d| format!(
                                    " (layer {d} is remote; the image service reads it)"
                                ))
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        let upper = self
            .upper
            .as_ref()
            .and_then(|u| u.files())
            .map(|(d, i)| (d.to_path_buf(), i.to_path_buf()));
        Ok((lowers, upper))
    }
}

/// Where `resultFile` (as written in the config at `config_path`) points: relative paths are
/// taken relative to the config file's directory, like every other path in it.
fn resolve_result_file(config_path: &Path, result_file: &Path) -> Option<PathBuf> {
    if result_file.as_os_str().is_empty() {
        return None;
    }
    let base = config_path.parent().unwrap_or(Path::new(""));
    Some(crate::source::absolutize(base, result_file))
}

impl DeviceConfig {
    /// The resolved `resultFile` of this config, read from `config_path`.
    pub fn result_path(&self, config_path: &Path) -> Option<PathBuf> {
        resolve_result_file(config_path, self.result_file.as_deref()?)
    }
}

/// Best-effort resolved `resultFile` of a config that may not parse: lets a caller report a
/// config error in the result file the snapshotter is waiting on.
pub fn result_file_hint(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    resolve_result_file(path, Path::new(v.get("resultFile")?.as_str()?))
}
