//! Sealing an append-only layer in place (`overlaybd-commit --seal`, upstream
//! `LSMTFile::close_seal`).
//!
//! ```text
//!   before: [header: header|data][payloads ...]
//!   after:  [header: header|data][payloads ...][index entries, zero-padded to 512 B]
//!           [trailer: data|sealed, index_offset, index_size = entries (no padding)]
//! ```
//!
//! The header is left as it was (flags header|data, not sealed), as upstream leaves it; the
//! trailer carries the header's virtual size, UUID and parent UUID and an empty commit
//! message. Overwritten payloads stay in the file as garbage. The index file is not touched.
//! Upstream pads the index with uninitialised memory; this implementation pads with zeros,
//! which readers ignore either way.

use std::path::Path;

use obd_core::{Error, Result, SECTOR_SIZE};

use crate::layout::{FLAG_DATA, FLAG_SEALED, HeaderTrailer, Segment, encode_segments};
use crate::ro::MAX_RO_INDEX_SIZE;
use crate::rw::AppendLayer;
use crate::writable::{LayerFile, read_header};

/// Where sealing put the index and how big the sealed file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealInfo {
    /// Byte offset of the appended index (the data file's size before sealing).
    pub index_offset: u64,
    /// Number of index entries (the trailer's `index_size`).
    pub index_size: u64,
    /// Size of the sealed file.
    pub file_size: u64,
}

/// Seal the append-only layer `data` + `index` in place, as `overlaybd-commit --seal data
/// index` does: its pending index is written, then the data file gets the index and a
/// sealed trailer appended and opens as a read-only layer from then on.
///
/// Sparse layers are refused ([`ErrorKind::Unsupported`](obd_core::ErrorKind)): upstream
/// would write a trailer with the sparse flag that its own reader asserts against.
pub fn seal_in_place(data: &Path, index: &Path) -> Result<SealInfo> {
    let h = read_header(&LayerFile::open(data, false)?)?;
    if h.is_sparse_rw() {
        return Err(
            Error::unsupported("sealing a sparse writable layer is not supported").with_path(data),
        );
    }
    AppendLayer::open(data, index)?.seal()
}

/// Append `segs` (sorted) and a sealed trailer built from `header` at `data_end` (sector
/// aligned) of `data`, cut the file there and sync it.
pub(crate) fn write_seal(
    data: &LayerFile,
    header: &HeaderTrailer,
    segs: &[Segment],
    data_end: u64,
) -> Result<SealInfo> {
    let fail = |e: Error| e.with_path(&data.path).context("sealing");
    if segs.len() as u64 > MAX_RO_INDEX_SIZE {
        return Err(fail(Error::invalid_input(format!(
            "the layer has {} index entries; a sealed layer may hold at most \
             {MAX_RO_INDEX_SIZE} (commit it instead)",
            segs.len()
        ))));
    }
    for s in segs {
        s.validate_for_disk().map_err(fail)?;
    }
    let mut buf = encode_segments(segs);
    buf.resize(
        buf.len().div_ceil(SECTOR_SIZE as usize) * SECTOR_SIZE as usize,
        0,
    );
    let trailer = HeaderTrailer {
        flags: FLAG_DATA | FLAG_SEALED,
        index_offset: data_end,
        index_size: segs.len() as u64,
        virtual_size: header.virtual_size,
        uuid: header.uuid.clone(),
        parent_uuid: header.parent_uuid.clone(),
        ..Default::default()
    };
    buf.extend_from_slice(&trailer.encode().map_err(fail)?);
    data.write_all_at(&buf, data_end)?;
    let file_size = data_end + buf.len() as u64;
    data.truncate(file_size)?;
    data.sync_data()?;
    Ok(SealInfo {
        index_offset: data_end,
        index_size: segs.len() as u64,
        file_size,
    })
}
