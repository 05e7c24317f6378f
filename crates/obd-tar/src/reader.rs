//! Opening the payload of a possibly tar-wrapped source.

use std::path::PathBuf;

use obd_core::{Error, ReadAt, Result, Slice};

use crate::layout::{self, MAX_HEADERS_LEN, TarEntry, Walk};

/// How much of the source is read first to look for tar headers; longer header chains are
/// read in full on demand (up to [`MAX_HEADERS_LEN`]).
const PROBE_LEN: u64 = 4096;

/// The payload carried by `src`: the tar entry's bytes when `src` is tar-wrapped, otherwise
/// all of `src` (upstream reads files without a tar header as they are).
///
/// Fails, naming the file and offset, when the tar headers are corrupt or truncated (see
/// [`layout::detect`]), when the declared payload runs past the end of the file, and for
/// upstream's unfinished-writer placeholder (`overlaybd.new`).
pub fn open_payload<R: ReadAt>(src: R) -> Result<Slice<R>> {
    open_payload_entry(src).map(|(payload, _)| payload)
}

/// Like [`open_payload`], also returning the tar entry found (`None` when `src` is not a tar).
pub fn open_payload_entry<R: ReadAt>(src: R) -> Result<(Slice<R>, Option<TarEntry>)> {
    let path: Option<PathBuf> = src.path().map(Into::into);
    let named = |e: Error| match &path {
        Some(p) => e.with_path(p),
        None => e,
    };
    let size = src.size();
    let mut probe = size.min(PROBE_LEN);
    let entry = loop {
        // `probe` never exceeds PROBE_LEN or MAX_HEADERS_LEN, so it fits in usize.
        let prefix = src.read_vec(0, probe as usize).map_err(named)?;
        match layout::walk(&prefix).map_err(named)? {
            Walk::Done(entry) => break entry,
            Walk::Short { at, end } if end > size => {
                return Err(named(
                    Error::corrupt(format!(
                        "tar header is truncated: it needs the file to extend to byte {end}, \
                         but the file has {size} bytes"
                    ))
                    .at_offset(at),
                ));
            }
            // `walk` only asks for bytes past the prefix, so `probe` grows every round.
            Walk::Short { end, .. } => probe = end.max(probe.saturating_mul(2)).min(size),
        }
    };
    debug_assert!(probe <= MAX_HEADERS_LEN.max(PROBE_LEN));
    let Some(entry) = entry else {
        return Ok((Slice::new(src, 0, size).map_err(named)?, None));
    };
    let Some(len) = entry.size else {
        return Err(named(
            Error::corrupt(format!(
                "unfinished tar wrapper: the writer left its '{}' placeholder and never recorded \
                 the payload size",
                entry.name
            ))
            .at_offset(2 * layout::BLOCK as u64),
        ));
    };
    if entry
        .data_offset
        .checked_add(len)
        .is_none_or(|end| end > size)
    {
        return Err(named(
            Error::corrupt(format!(
                "tar entry '{}' declares a payload of {len} bytes at offset {}, but the file \
                 has only {size} bytes",
                entry.name, entry.data_offset
            ))
            .at_offset(entry.data_offset),
        ));
    }
    let payload = Slice::new(src, entry.data_offset, len).map_err(named)?;
    Ok((payload, Some(entry)))
}
