//! Opening layer files of any representation: plain LSMT, ZFile-compressed, tar-wrapped,
//! writable data/index pairs, and stacks of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use obd_core::{FileDevice, ReadAt};
use obd_lsmt::layout::HeaderTrailer;
use obd_lsmt::{LayerStack, StackDevice, WritableLayer};
use obd_zfile::ZFileReader;

/// What wraps the LSMT bytes of a blob.
pub struct Blob {
    /// The file.
    pub path: PathBuf,
    /// Where the payload starts when the file is tar-wrapped.
    pub tar_offset: Option<u64>,
    /// Size of the payload (the whole file unless tar-wrapped).
    pub payload_size: u64,
    /// The ZFile reader when the payload is ZFile-compressed.
    pub zfile: Option<Arc<ZFileReader<obd_core::Slice<Arc<FileDevice>>>>>,
    /// The innermost bytes (the LSMT file, or whatever the blob holds).
    pub inner: Arc<dyn ReadAt>,
}

/// Open `path`, unwrap a tar wrapper and a ZFile if present, and return the inner bytes.
pub fn open_blob(path: &Path) -> Result<Blob> {
    let file = Arc::new(FileDevice::open(path)?);
    let payload = obd_tar::open_payload(file)?;
    let tar_offset = (payload.start() > 0).then_some(payload.start());
    let payload_size = payload.size();
    let n = payload.size().min(512) as usize;
    let head = payload.read_vec(0, n)?;
    if obd_zfile::is_zfile(&head) {
        let z = Arc::new(ZFileReader::open(payload)?);
        Ok(Blob {
            path: path.to_path_buf(),
            tar_offset,
            payload_size,
            zfile: Some(z.clone()),
            inner: z,
        })
    } else {
        Ok(Blob {
            path: path.to_path_buf(),
            tar_offset,
            payload_size,
            zfile: None,
            inner: Arc::new(payload),
        })
    }
}

/// Read the LSMT header at the start of a source, if it has one.
pub fn lsmt_header(src: &dyn ReadAt) -> Option<HeaderTrailer> {
    let n = src.size().min(4096) as usize;
    let head = src.read_vec(0, n).ok()?;
    HeaderTrailer::decode(&head).ok()
}

/// Whether `src` ends with a sealed LSMT trailer: a committed layer, or a writable data file
/// sealed in place (whose header still says "writable").
pub fn has_sealed_trailer(src: &dyn ReadAt) -> bool {
    let size = src.size();
    if size < 8192 {
        return false;
    }
    src.read_vec(size - 4096, 4096)
        .ok()
        .and_then(|t| HeaderTrailer::decode(&t).ok())
        .is_some_and(|t| t.is_trailer() && t.is_data_file() && t.is_sealed())
}

/// Whether `src` is a writable layer's data file that has not been sealed.
pub fn is_unsealed_writable(src: &dyn ReadAt) -> bool {
    lsmt_header(src).is_some_and(|h| h.is_header() && h.is_data_file() && !h.is_sealed())
        && !has_sealed_trailer(src)
}

/// Open a writable layer (append or sparse, as its data file's header says).
pub fn open_writable(data: &Path, index: &Path) -> Result<Box<dyn WritableLayer>> {
    let dev = FileDevice::open(data)?;
    let Some(h) = lsmt_header(&dev) else {
        bail!(
            "{}: not an LSMT writable data file (no LSMT header)",
            data.display()
        );
    };
    if !h.is_header() || !h.is_data_file() || h.is_sealed() || has_sealed_trailer(&dev) {
        bail!(
            "{}: not a writable LSMT data file (flags {:#x}: {})",
            data.display(),
            h.flags,
            describe_flags(&h)
        );
    }
    Ok(obd_lsmt::open_writable(data, Some(index))?)
}

/// Words for an LSMT header's flags.
pub fn describe_flags(h: &HeaderTrailer) -> String {
    let mut v = vec![if h.is_header() { "header" } else { "trailer" }];
    v.push(if h.is_data_file() { "data" } else { "index" });
    if h.is_sealed() {
        v.push("sealed");
    }
    if h.is_sparse_rw() {
        v.push("sparse");
    }
    v.join("|")
}

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
        match is_unsealed_writable(&dev) {
            true => {
                let index = files.get(i + 1).with_context(|| {
                    format!(
                        "{} is a writable layer's data file: give its index file right after it",
                        path.display()
                    )
                })?;
                parts.push(Part::Upper(path.clone(), index.clone()));
                i += 2;
            }
            false => {
                parts.push(Part::Layer(path.clone()));
                i += 1;
            }
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
/// `config.v1.json` when a single `.json` file is given.
pub fn open_device(files: &[PathBuf]) -> Result<Arc<dyn ReadAt>> {
    if let [one] = files
        && one.extension().is_some_and(|e| e == "json")
    {
        let cfg = crate::config::DeviceConfig::load(one)?;
        let (lowers, upper) = cfg.layer_files()?;
        let mut list = lowers;
        if let Some((d, i)) = upper {
            list.push(d);
            list.push(i);
        }
        return open_device(&list);
    }
    if files.is_empty() {
        bail!("no layer files given");
    }
    let parts = classify(files)?;
    let mut lowers: Vec<Arc<dyn ReadAt>> = Vec::new();
    let mut upper = None;
    for p in parts {
        match p {
            Part::Layer(path) => lowers.push(open_blob(&path)?.inner),
            Part::Upper(d, i) => upper = Some(open_writable(&d, &i)?),
        }
    }
    let lower: Option<Arc<dyn ReadAt>> = if lowers.is_empty() {
        None
    } else {
        Some(Arc::new(LayerStack::open(lowers)?))
    };
    Ok(match (upper, lower) {
        (None, Some(l)) => l,
        (None, None) => bail!("no layers given"),
        (Some(u), lower) => Arc::new(StackDevice::new(lower, Arc::from(u))),
    })
}
