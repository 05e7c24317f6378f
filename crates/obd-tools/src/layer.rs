//! Opening layer files of any representation (plain LSMT, ZFile-compressed, tar-wrapped,
//! writable data/index pairs) and stacks of them, through the image service
//! ([`obd_image`]), which owns all of that logic; this module only adds the command-line
//! convention of listing layer files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use obd_core::{FileDevice, ReadAt};
use obd_image::{DeviceConfig, GlobalConfig, ImageService, LowerConfig, UpperConfig};

pub use obd_image::blob::{
    Blob, describe_flags, has_sealed_trailer, is_unsealed_writable, lsmt_header, open_blob,
};
pub use obd_image::open_writable;

/// One element of a device description given on the command line.
enum Part {
    Layer(PathBuf),
    Upper(PathBuf, PathBuf),
}

/// Classify command-line files: committed/sealed layers, and writable data files followed by
/// their index file. A writable layer may only be the last (top) element.
fn classify(files: &[PathBuf]) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < files.len() {
        let path = &files[i];
        let dev = FileDevice::open(path)?;
        if is_unsealed_writable(&dev) {
            let index = files.get(i + 1).with_context(|| {
                format!(
                    "{} is a writable layer's data file: give its index file right after it",
                    path.display()
                )
            })?;
            parts.push(Part::Upper(path.clone(), index.clone()));
            i += 2;
        } else {
            parts.push(Part::Layer(path.clone()));
            i += 1;
        }
    }
    if let Some(pos) = parts.iter().position(|p| matches!(p, Part::Upper(..)))
        && pos + 1 != parts.len()
    {
        bail!("a writable layer (data + index) must be the last, topmost, element of the stack");
    }
    Ok(parts)
}

/// Open a read view of the virtual device made of `files` (bottom to top), or of a
/// `config.v1.json` when a single `.json` file is given. Config warnings go to stderr. A
/// config whose lowers name registry blobs reads them with the registry and cache settings
/// of the global config `service_config` (built-in defaults when it does not exist).
pub fn open_device(files: &[PathBuf], service_config: &Path) -> Result<Arc<dyn ReadAt>> {
    if let [one] = files
        && one.extension().is_some_and(|e| e == "json")
    {
        let cfg = DeviceConfig::load(one)?.value;
        let mut service = ImageService::new(GlobalConfig::default());
        if cfg.lowers.iter().any(|l| l.digest.is_some()) {
            let global = GlobalConfig::load_or_default(service_config)?.value;
            let (src, warnings) = obd_image::RegistrySource::from_global(&global)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            service = ImageService::new(global).with_remote(Arc::new(src));
        }
        let dev = service.open(one)?;
        for w in &dev.info().warnings {
            eprintln!("warning: {w}");
        }
        return Ok(Arc::new(dev));
    }
    if files.is_empty() {
        bail!("no layer files given");
    }
    let service = ImageService::new(GlobalConfig::default());
    let mut cfg = DeviceConfig::default();
    for p in classify(files)? {
        match p {
            Part::Layer(file) => cfg.lowers.push(LowerConfig {
                file: Some(file),
                ..LowerConfig::default()
            }),
            Part::Upper(data, index) => {
                cfg.upper = Some(UpperConfig {
                    data: Some(data),
                    index: Some(index),
                    ..UpperConfig::default()
                })
            }
        }
    }
    Ok(Arc::new(
        service.open_config(&cfg, Path::new("(command line)"))?,
    ))
}
