//! Unwrapping layer blobs: `tar{ ZFile{ LSMT } }`, each wrapper optional, detected from the
//! bytes; and telling the LSMT file kinds apart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_core::{FileDevice, ReadAt, Result, Slice};
use obd_lsmt::layout::{HT_SIZE, HeaderTrailer};
use obd_zfile::ZFileReader;

/// The ZFile reader type of an unwrapped blob.
pub type BlobZFile = ZFileReader<Slice<Arc<dyn ReadAt>>>;

/// A layer blob with its wrappers identified.
pub struct Blob {
    /// The file, when the blob is local.
    pub path: Option<PathBuf>,
    /// Where the payload starts when the blob is tar-wrapped.
    pub tar_offset: Option<u64>,
    /// Size of the payload (the whole blob unless tar-wrapped).
    pub payload_size: u64,
    /// The ZFile reader when the payload is ZFile-compressed.
    pub zfile: Option<Arc<BlobZFile>>,
    /// The innermost bytes (the LSMT file, or whatever the blob holds).
    pub inner: Arc<dyn ReadAt>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("path", &self.path)
            .field("tar_offset", &self.tar_offset)
            .field("payload_size", &self.payload_size)
            .field("zfile", &self.zfile.is_some())
            .field("inner_size", &self.inner.size())
            .finish()
    }
}

/// Detect a tar wrapper ([`obd_tar::open_payload`]) and a ZFile ([`obd_zfile::is_zfile`])
/// around `raw`, and give the inner bytes. Errors name the file (when `raw` has a path) and
/// the offset.
pub fn unwrap_blob(raw: Arc<dyn ReadAt>) -> Result<Blob> {
    let path = raw.path().map(Path::to_path_buf);
    let payload = obd_tar::open_payload(raw)?;
    let tar_offset = (payload.start() > 0).then_some(payload.start());
    let payload_size = payload.size();
    let n = payload_size.min(512) as usize;
    let head = payload.read_vec(0, n)?;
    let (zfile, inner): (_, Arc<dyn ReadAt>) = if obd_zfile::is_zfile(&head) {
        let z = Arc::new(ZFileReader::open(payload)?);
        (Some(z.clone()), z)
    } else {
        (None, Arc::new(payload))
    };
    Ok(Blob {
        path,
        tar_offset,
        payload_size,
        zfile,
        inner,
    })
}

/// Open the local file `path` and [`unwrap_blob`] it.
pub fn open_blob(path: &Path) -> Result<Blob> {
    let file: Arc<dyn ReadAt> = Arc::new(FileDevice::open(path)?);
    unwrap_blob(file)
}

/// The LSMT header at the start of `src`, if it has one.
pub fn lsmt_header(src: &dyn ReadAt) -> Option<HeaderTrailer> {
    let n = src.size().min(HT_SIZE as u64) as usize;
    let head = src.read_vec(0, n).ok()?;
    HeaderTrailer::decode(&head).ok()
}

/// Whether `src` ends with a sealed LSMT trailer: a committed layer, or a writable data file
/// sealed in place (whose header still says "writable").
pub fn has_sealed_trailer(src: &dyn ReadAt) -> bool {
    let size = src.size();
    let ht = HT_SIZE as u64;
    if size < 2 * ht {
        return false;
    }
    src.read_vec(size - ht, HT_SIZE)
        .ok()
        .and_then(|t| HeaderTrailer::decode(&t).ok())
        .is_some_and(|t| t.is_trailer() && t.is_data_file() && t.is_sealed())
}

/// Whether `src` is a writable layer's data file that has not been sealed.
pub fn is_unsealed_writable(src: &dyn ReadAt) -> bool {
    lsmt_header(src).is_some_and(|h| h.is_header() && h.is_data_file() && !h.is_sealed())
        && !has_sealed_trailer(src)
}

/// Words for an LSMT header's flags: `header|data|sealed|sparse`.
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
