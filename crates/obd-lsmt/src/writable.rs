//! What the writable layer kinds share: creation options, the [`WritableLayer`] trait the
//! stack device drives, the layer data file, and header and argument checks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use obd_core::{BlockDevice, Error, ErrorKind, ReadAt, Result, SECTOR_SIZE, check_range};

use crate::compact::{CommitMeta, CompactStats};
use crate::layout::{
    FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SIZE, HeaderTrailer, INVALID_OFFSET, KNOWN_FLAGS,
    NIL_UUID, Segment,
};

/// Identity of a new writable layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The layer's UUID (`8-4-4-4-12` hex). `None`: a random version-4 UUID, written in
    /// upper case as upstream `overlaybd-create` does.
    pub uuid: Option<String>,
    /// The parent layer's UUID. `None`: the nil UUID.
    pub parent_uuid: Option<String>,
}

/// A writable LSMT layer (append-only or sparse), as driven by
/// [`StackDevice`](crate::device::StackDevice).
///
/// As a [`BlockDevice`] the layer is its own device with nothing below it (unmapped sectors
/// read as zeros); its size is the virtual size. Writes and discards must be 512-byte
/// aligned. The layer maps some sectors of its device to data in its data file
/// ([`WritableLayer::data_source`]) or to zeros; unmapped sectors belong to whatever lies
/// below it. Implementations are thread-safe: reads run concurrently with writes.
pub trait WritableLayer: BlockDevice + std::fmt::Debug {
    /// The layer's UUID text from its header.
    fn uuid(&self) -> &str;
    /// The parent layer's UUID text from its header.
    fn parent_uuid(&self) -> &str;
    /// Whether this is a sparse layer.
    fn is_sparse(&self) -> bool;
    /// Append to `out` this layer's mappings of sectors `[start, end)`, clipped, in order.
    /// `moffset`s are sector offsets in [`WritableLayer::data_source`].
    fn lookup_into(&self, start: u64, end: u64, out: &mut Vec<Segment>);
    /// A sorted snapshot of all mappings (tags 0).
    fn segments(&self) -> Vec<Segment>;
    /// The data file the mappings point into.
    fn data_source(&self) -> &dyn ReadAt;
    /// Write this layer alone as a committed read-only layer to `out` (`overlaybd-commit`).
    /// Defaults in `meta`: `vsize` 0 means the layer's size; `parent_uuid` `None` means the
    /// parent recorded in the layer's header.
    fn commit(&self, out: &mut dyn Write, meta: &CommitMeta) -> Result<CompactStats>;
    /// [`WritableLayer::commit`] into a regular file with positional writes (and
    /// `copy_file_range` where possible).
    fn commit_to_file(&self, out: &File, meta: &CommitMeta) -> Result<CompactStats>;
}

/// Open an existing writable layer of either kind, as its data file's header says:
/// append-only layers need `index`, sparse layers ignore it.
pub fn open_writable(data: &Path, index: Option<&Path>) -> Result<Box<dyn WritableLayer>> {
    let f = LayerFile::open(data, false)?;
    let h = read_header(&f)?;
    if h.is_sparse_rw() {
        return Ok(Box::new(crate::sparse::SparseLayer::open(data)?));
    }
    let index = index.ok_or_else(|| {
        Error::invalid_input("an append-only layer needs its index file").with_path(data)
    })?;
    Ok(Box::new(crate::rw::AppendLayer::open(data, index)?))
}

pub use crate::layout::is_uuid_text;

fn uuid_or(what: &str, v: Option<&str>, default: impl FnOnce() -> String) -> Result<String> {
    match v {
        None => Ok(default()),
        Some(u) if is_uuid_text(u) => Ok(u.to_string()),
        Some(u) => Err(Error::invalid_input(format!(
            "{what} '{u}' is not a UUID (8-4-4-4-12 hex digits)"
        ))),
    }
}

/// The header a new writable layer's data file (`is_data`) or index file gets.
pub(crate) fn new_header(
    vsize: u64,
    opts: &CreateOptions,
    extra_flags: u32,
    is_data: bool,
) -> Result<HeaderTrailer> {
    if vsize == 0 || !vsize.is_multiple_of(SECTOR_SIZE) || vsize / SECTOR_SIZE >= INVALID_OFFSET {
        return Err(Error::invalid_input(format!(
            "virtual size {vsize} must be a non-zero multiple of {SECTOR_SIZE} below 2^59"
        )));
    }
    let uuid = uuid_or("uuid", opts.uuid.as_deref(), || {
        uuid::Uuid::new_v4()
            .hyphenated()
            .to_string()
            .to_ascii_uppercase()
    })?;
    let parent_uuid = uuid_or("parent uuid", opts.parent_uuid.as_deref(), || {
        NIL_UUID.into()
    })?;
    Ok(HeaderTrailer {
        flags: FLAG_HEADER | if is_data { FLAG_DATA } else { 0 } | extra_flags,
        index_offset: if is_data { 0 } else { HT_SIZE as u64 },
        virtual_size: vsize,
        uuid,
        parent_uuid,
        ..Default::default()
    })
}

/// Read and decode the 4 KiB header of `f`, requiring the magic, the header bit, only known
/// flags and no sealed bit.
pub(crate) fn read_header(f: &LayerFile) -> Result<HeaderTrailer> {
    if f.size() < HT_SIZE as u64 {
        return Err(Error::corrupt(format!(
            "file is {} bytes, too small for an LSMT header ({HT_SIZE} bytes)",
            f.size()
        ))
        .at_offset(f.size())
        .with_path(&f.path));
    }
    let buf = f.read_vec(0, HT_SIZE)?;
    let h = HeaderTrailer::decode(&buf).map_err(|e| e.at_offset(0).with_path(&f.path))?;
    let bad = |msg: String| Err(Error::corrupt(msg).at_offset(28).with_path(&f.path));
    if !h.is_header() {
        return bad(format!(
            "LSMT header flags {:#x} lack the header bit",
            h.flags
        ));
    }
    if h.flags & !KNOWN_FLAGS != 0 {
        return Err(Error::unsupported(format!(
            "LSMT header flags {:#x} use bits this implementation does not know",
            h.flags
        ))
        .at_offset(28)
        .with_path(&f.path));
    }
    if h.flags & FLAG_SEALED != 0 {
        return bad(format!(
            "LSMT header flags {:#x}: sealed, not a writable layer",
            h.flags
        ));
    }
    Ok(h)
}

/// Check a block write or discard: 512-byte aligned, inside the device.
pub(crate) fn check_io(vsize: u64, offset: u64, len: u64, what: &str) -> Result<()> {
    if !offset.is_multiple_of(SECTOR_SIZE) || !len.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::invalid_input(format!(
            "{what} of {len} bytes at {offset}: offset and length must be multiples of \
             {SECTOR_SIZE}"
        ))
        .at_offset(offset));
    }
    check_range(vsize, offset, len).map_err(|e| e.at_offset(offset))
}

/// Split `[offset, offset + len)` sectors into pieces of at most `max` sectors:
/// yields (sector offset, sector count, sectors from the start).
pub(crate) fn pieces(offset: u64, len: u64, max: u32) -> impl Iterator<Item = (u64, u32, u64)> {
    let max = u64::from(max);
    (0..len.div_ceil(max)).map(move |i| {
        let done = i * max;
        (offset + done, (len - done).min(max) as u32, done)
    })
}

/// Fill in a commit's defaults from the layer: its size and its header's parent.
pub(crate) fn commit_meta(meta: &CommitMeta, vsize: u64, parent: &str) -> CommitMeta {
    let mut m = meta.clone();
    if m.vsize == 0 {
        m.vsize = vsize;
    }
    if m.parent_uuid.is_none() && is_uuid_text(parent) {
        m.parent_uuid = Some(parent.to_string());
    }
    m
}

/// A layer file: positional I/O with the path in every error, and a tracked logical size.
#[derive(Debug)]
pub(crate) struct LayerFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    len: AtomicU64,
}

impl LayerFile {
    /// Open an existing file, read-only or read-write.
    pub(crate) fn open(path: &Path, writable: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io("open", e).with_path(path))?;
        Self::wrap(file, path)
    }

    /// Create a new file, failing if it exists (`O_EXCL`), mode 0644.
    pub(crate) fn create_new(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io("create", e).with_path(path))?;
        Self::wrap(file, path)
    }

    fn wrap(file: File, path: &Path) -> Result<Self> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", e).with_path(path))?
            .len();
        Ok(LayerFile {
            file,
            path: path.to_path_buf(),
            len: AtomicU64::new(len),
        })
    }

    /// Set the size reads are checked against.
    pub(crate) fn set_size(&self, len: u64) {
        self.len.store(len, Ordering::Release);
    }

    /// Write all of `buf` at `offset`.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| {
            Error::io("write", e)
                .at_offset(offset)
                .with_path(&self.path)
        })
    }

    /// Resize the file.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", e).with_path(&self.path))?;
        self.set_size(len);
        Ok(())
    }

    /// `fdatasync`.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync", e).with_path(&self.path))
    }
}

impl ReadAt for LayerFile {
    fn size(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64).map_err(|e| e.with_path(&self.path))?;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(
                    ErrorKind::OutOfRange,
                    "file is shorter than expected (truncated?)",
                )
            } else {
                Error::io("read", e)
            };
            e.at_offset(offset).with_path(&self.path)
        })
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn file_region(&self) -> Option<(&File, u64)> {
        Some((&self.file, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split() {
        let p: Vec<_> = pieces(10, 20, 8).collect();
        assert_eq!(p, vec![(10, 8, 0), (18, 8, 8), (26, 4, 16)]);
        assert_eq!(pieces(0, 0, 8).count(), 0);
    }

    #[test]
    fn uuid_text() {
        assert!(is_uuid_text("11111111-1111-4111-8111-111111111111"));
        assert!(is_uuid_text("30A417C1-9D56-4C9C-B1F3-5A3050383BAF"));
        assert!(!is_uuid_text("11111111-1111-4111-8111-11111111111"));
        assert!(!is_uuid_text("11111111x1111-4111-8111-111111111111"));
        let h = new_header(1 << 20, &CreateOptions::default(), 0, true).unwrap();
        assert!(is_uuid_text(&h.uuid));
        assert_eq!(h.uuid, h.uuid.to_ascii_uppercase());
        assert_eq!(h.parent_uuid, NIL_UUID);
        assert!(new_header(1000, &CreateOptions::default(), 0, true).is_err());
        let bad = CreateOptions {
            uuid: Some("nope".into()),
            parent_uuid: None,
        };
        assert!(new_header(4096, &bad, 0, true).is_err());
    }
}
