//! Opening a writable upper layer (append-only or sparse, as its data file's header says),
//! refusing files that are not unsealed writable data files.

use std::path::Path;

use obd_core::{Error, FileDevice, Result};
use obd_lsmt::{AppendLayer, SparseLayer, WritableLayer};

use crate::blob::{describe_flags, has_sealed_trailer, lsmt_header};

/// Open the writable layer `data` + `index` for reading and writing. Sparse layers (flag in
/// the data file's header) ignore `index`. A file that is not an unsealed LSMT writable data
/// file (a committed or sealed layer, a ZFile, anything else) is refused with a message
/// naming it and its flags.
pub fn open_writable(data: &Path, index: &Path) -> Result<Box<dyn WritableLayer>> {
    open_writable_with_warnings(data, index).map(|(l, _)| l)
}

/// [`open_writable`], also returning what opening reported (e.g. a torn last index entry
/// cut off after a crash).
pub fn open_writable_with_warnings(
    data: &Path,
    index: &Path,
) -> Result<(Box<dyn WritableLayer>, Vec<String>)> {
    let dev = FileDevice::open(data)?;
    let Some(h) = lsmt_header(&dev) else {
        return Err(
            Error::invalid_input("not an LSMT writable data file (no LSMT header)")
                .at_offset(0)
                .with_path(data),
        );
    };
    if !h.is_header() || !h.is_data_file() || h.is_sealed() || has_sealed_trailer(&dev) {
        return Err(Error::invalid_input(format!(
            "not a writable LSMT data file (flags {:#x}: {}{})",
            h.flags,
            describe_flags(&h),
            if has_sealed_trailer(&dev) {
                ", sealed trailer"
            } else {
                ""
            }
        ))
        .at_offset(0)
        .with_path(data));
    }
    drop(dev);
    if h.is_sparse_rw() {
        return Ok((Box::new(SparseLayer::open(data)?), Vec::new()));
    }
    let layer = AppendLayer::open(data, index)?;
    let warnings = layer.warnings().to_vec();
    Ok((Box::new(layer), warnings))
}
