//! The parts of overlaybd's per-device `config.v1.json` the tools need: the layer files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A device config (`config.v1.json`). Unknown fields are accepted, as upstream does.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// Layers, bottom to top.
    #[serde(default)]
    pub lowers: Vec<Lower>,
    /// The writable layer, if any.
    pub upper: Option<Upper>,
    /// Where the service writes `success` or the failure reason.
    pub result_file: Option<PathBuf>,
    /// Base URL of the registry repository's blobs (for remote layers).
    pub repo_blob_url: Option<String>,
}

/// One lower layer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lower {
    /// A local layer file.
    pub file: Option<PathBuf>,
    /// A layer directory holding `overlaybd.commit` (or `.commit`, `overlaybd.sealed`).
    pub dir: Option<PathBuf>,
    /// Remote blob digest.
    pub digest: Option<String>,
}

/// The writable upper layer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upper {
    /// Index file.
    pub index: Option<PathBuf>,
    /// Data file.
    pub data: Option<PathBuf>,
}

/// Local files of a device: the lowers bottom to top, and the upper's (data, index).
pub type LayerFiles = (Vec<PathBuf>, Option<(PathBuf, PathBuf)>);

/// File names searched in a layer `dir`, in order.
pub const DIR_LAYER_NAMES: [&str; 3] = ["overlaybd.commit", ".commit", "overlaybd.sealed"];

impl DeviceConfig {
    /// Read and parse `path`; errors name the file and the JSON location.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read device config {}", path.display()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            anyhow::anyhow!(
                "{}: invalid device config at '{at}': {}",
                path.display(),
                e.into_inner()
            )
        })
    }

    /// Resolve the lowers to local files and the upper to (data, index).
    pub fn layer_files(&self) -> Result<LayerFiles> {
        let mut lowers = Vec::new();
        for (i, l) in self.lowers.iter().enumerate() {
            if let Some(f) = &l.file {
                lowers.push(f.clone());
                continue;
            }
            if let Some(dir) = &l.dir {
                let found = DIR_LAYER_NAMES
                    .iter()
                    .map(|n| dir.join(n))
                    .find(|p| p.exists());
                if let Some(p) = found {
                    lowers.push(p);
                    continue;
                }
            }
            if l.digest.is_some() {
                bail!(
                    "lowers[{i}]: layer {} is remote; reading remote layers needs the image \
                     service (not available in the offline tools)",
                    l.digest.as_deref().unwrap_or_default()
                );
            }
            bail!("lowers[{i}]: neither 'file' nor a 'dir' holding a committed layer");
        }
        let upper = match &self.upper {
            Some(Upper {
                data: Some(d),
                index: Some(i),
            }) => Some((d.clone(), i.clone())),
            _ => None,
        };
        Ok((lowers, upper))
    }
}
