//! The read path shared by single layers and stacks: resolve a byte range through a
//! [`SegmentIndex`], zero-fill holes and zeroed ranges, and issue one read per run of
//! segments that is contiguous in both the device and one layer file.

use obd_core::{Error, ErrorKind, ReadAt, Result, SECTOR_SIZE};

use crate::index::SegmentIndex;

/// A pending read: `len` bytes of layer `tag` at file offset `file_off` into `buf[at..]`.
#[derive(Clone, Copy)]
struct Run {
    tag: u8,
    at: usize,
    file_off: u64,
    len: usize,
}

fn flush<'a, F>(run: Run, buf: &mut [u8], source: &F) -> Result<()>
where
    F: Fn(u8) -> Option<&'a dyn ReadAt>,
{
    let src = source(run.tag).ok_or_else(|| {
        Error::corrupt(format!(
            "index refers to layer {} which does not exist",
            run.tag
        ))
    })?;
    let Some(dst) = buf.get_mut(run.at..run.at + run.len) else {
        return Err(Error::invalid_input(
            "internal: read run outside the buffer",
        ));
    };
    src.read_exact_at(dst, run.file_off).map_err(|e| {
        let e = if e.kind() == ErrorKind::OutOfRange {
            // The index promised data the file does not hold: the layer file is truncated.
            Error::corrupt(format!(
                "layer data ({} bytes at file offset {}) lies beyond the end of the file \
                 ({} bytes); truncated layer?",
                run.len,
                run.file_off,
                src.size()
            ))
            .at_offset(run.file_off)
        } else {
            e.at_offset(run.file_off)
        };
        match src.path() {
            Some(p) => e.with_path(p),
            None => e.context(format_args!("layer {}", run.tag)),
        }
    })
}

/// Fill `buf` with the device bytes at `offset`, as mapped by `index`. `source(tag)` gives the
/// file of layer `tag`. The caller has checked `[offset, offset + buf.len())` against the
/// device size. Offsets and lengths need no alignment.
pub(crate) fn read_mapped<'a, F>(
    index: &SegmentIndex,
    buf: &mut [u8],
    offset: u64,
    source: F,
) -> Result<()>
where
    F: Fn(u8) -> Option<&'a dyn ReadAt>,
{
    if buf.is_empty() {
        return Ok(());
    }
    let end = offset + buf.len() as u64;
    let first = offset / SECTOR_SIZE;
    let last = end.div_ceil(SECTOR_SIZE);
    // Bytes before `filled` (device offset) are done or queued in `run`.
    let mut filled = offset;
    let mut run: Option<Run> = None;
    for s in index.lookup_range(first, last) {
        let seg_start = s.offset * SECTOR_SIZE;
        let b_start = seg_start.max(offset);
        let b_end = (s.end() * SECTOR_SIZE).min(end);
        if b_start > filled {
            if let Some(r) = run.take() {
                flush(r, buf, &source)?;
            }
            buf[(filled - offset) as usize..(b_start - offset) as usize].fill(0);
        }
        let at = (b_start - offset) as usize;
        let len = (b_end - b_start) as usize;
        if s.zeroed {
            if let Some(r) = run.take() {
                flush(r, buf, &source)?;
            }
            buf[at..at + len].fill(0);
        } else {
            let file_off = s
                .moffset
                .saturating_mul(SECTOR_SIZE)
                .saturating_add(b_start - seg_start);
            match &mut run {
                Some(r)
                    if r.tag == s.tag
                        && r.at + r.len == at
                        && r.file_off + r.len as u64 == file_off =>
                {
                    r.len += len;
                }
                _ => {
                    if let Some(r) = run.replace(Run {
                        tag: s.tag,
                        at,
                        file_off,
                        len,
                    }) {
                        flush(r, buf, &source)?;
                    }
                }
            }
        }
        filled = b_end;
    }
    if let Some(r) = run.take() {
        flush(r, buf, &source)?;
    }
    if filled < end {
        buf[(filled - offset) as usize..].fill(0);
    }
    Ok(())
}
