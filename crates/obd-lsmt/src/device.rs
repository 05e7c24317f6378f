//! The writable device: a writable upper layer over an optional read-only lower device
//! (upstream `stack_files` + `ComboIndex`).
//!
//! ```text
//!   read:   upper mapping? ── data ──> upper's data file
//!                          ── zeroed ─> zeros
//!           no mapping   ───────────> lower device (or zeros when there is none)
//!   write / discard / flush ────────> upper layer
//! ```
//!
//! Writes never copy lower data: an upper mapping simply hides what lies below it.

use std::path::Path;
use std::sync::Arc;

use obd_core::{BlockDevice, Error, ErrorKind, ReadAt, Result, SECTOR_SIZE, check_range};

use crate::layout::Segment;
use crate::writable::WritableLayer;

/// A writable layer over an optional read-only lower device, as one [`BlockDevice`].
///
/// The lower device is typically a [`LayerStack`](crate::stack::LayerStack) of committed
/// layers. The device size is the upper layer's virtual size; lower data beyond the lower
/// device's size reads as zeros.
#[derive(Clone)]
pub struct StackDevice {
    lower: Option<Arc<dyn ReadAt>>,
    upper: Arc<dyn WritableLayer>,
}

impl std::fmt::Debug for StackDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackDevice")
            .field("lower_size", &self.lower.as_ref().map(|l| l.size()))
            .field("upper_uuid", &self.upper.uuid())
            .field("vsize", &self.upper.size())
            .finish()
    }
}

impl StackDevice {
    /// Stack `upper` over `lower` (`None`: nothing below, unmapped sectors read as zeros).
    pub fn new(lower: Option<Arc<dyn ReadAt>>, upper: Arc<dyn WritableLayer>) -> Self {
        StackDevice { lower, upper }
    }

    /// The writable upper layer.
    pub fn upper(&self) -> &Arc<dyn WritableLayer> {
        &self.upper
    }

    /// The read-only lower device, if any.
    pub fn lower(&self) -> Option<&Arc<dyn ReadAt>> {
        self.lower.as_ref()
    }
}

impl ReadAt for StackDevice {
    fn size(&self) -> u64 {
        self.upper.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64)?;
        read_layered(self.upper.as_ref(), self.lower.as_deref(), buf, offset)
    }

    fn path(&self) -> Option<&Path> {
        self.upper.data_source().path()
    }
}

impl BlockDevice for StackDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.upper.write_at(buf, offset)
    }

    fn flush(&self) -> Result<()> {
        self.upper.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.upper.discard(offset, len)
    }

    fn is_read_only(&self) -> bool {
        self.upper.is_read_only()
    }
}

/// Fill `dst` with device bytes at `dev_off` from `lower`, zeros where it has none.
fn read_lower(lower: Option<&dyn ReadAt>, dst: &mut [u8], dev_off: u64) -> Result<()> {
    let Some(lower) = lower else {
        dst.fill(0);
        return Ok(());
    };
    let avail = lower.size().saturating_sub(dev_off).min(dst.len() as u64) as usize;
    let (have, beyond) = dst.split_at_mut(avail);
    beyond.fill(0);
    if !have.is_empty() {
        lower.read_exact_at(have, dev_off)?;
    }
    Ok(())
}

/// Read `len` bytes of `data` at `file_off` into `dst`, reporting a short file as corrupt.
fn read_data(data: &dyn ReadAt, dst: &mut [u8], file_off: u64) -> Result<()> {
    data.read_exact_at(dst, file_off).map_err(|e| {
        let e = if e.kind() == ErrorKind::OutOfRange {
            Error::corrupt(format!(
                "layer data ({} bytes at file offset {file_off}) lies beyond the end of the \
                 data file ({} bytes)",
                dst.len(),
                data.size()
            ))
            .at_offset(file_off)
        } else {
            e.at_offset(file_off)
        };
        match data.path() {
            Some(p) => e.with_path(p),
            None => e,
        }
    })
}

/// Read device bytes `[offset, offset + buf.len())` (already checked against the device
/// size; any alignment) through `upper`'s mappings, falling through to `lower` in the gaps.
/// Data runs contiguous in the data file are read with one call.
pub(crate) fn read_layered(
    upper: &dyn WritableLayer,
    lower: Option<&dyn ReadAt>,
    buf: &mut [u8],
    offset: u64,
) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let end = offset + buf.len() as u64;
    let mut segs: Vec<Segment> = Vec::new();
    upper.lookup_into(offset / SECTOR_SIZE, end.div_ceil(SECTOR_SIZE), &mut segs);
    let data = upper.data_source();
    // Pending data read: (buffer position, file offset, length).
    let mut run: Option<(usize, u64, usize)> = None;
    let flush_run = |run: &mut Option<(usize, u64, usize)>, buf: &mut [u8]| -> Result<()> {
        match run.take() {
            Some((at, off, len)) => read_data(data, &mut buf[at..at + len], off),
            None => Ok(()),
        }
    };
    let mut filled = offset;
    for s in &segs {
        let seg_start = s.offset * SECTOR_SIZE;
        let b_start = seg_start.max(offset);
        let b_end = (s.end() * SECTOR_SIZE).min(end);
        if b_end <= b_start || b_start < filled {
            return Err(Error::corrupt(format!("internal: bad lookup result {s:?}")));
        }
        if b_start > filled {
            flush_run(&mut run, buf)?;
            let at = (filled - offset) as usize;
            read_lower(lower, &mut buf[at..(b_start - offset) as usize], filled)?;
        }
        let at = (b_start - offset) as usize;
        let len = (b_end - b_start) as usize;
        if s.zeroed {
            flush_run(&mut run, buf)?;
            buf[at..at + len].fill(0);
        } else {
            let file_off = s
                .moffset
                .saturating_mul(SECTOR_SIZE)
                .saturating_add(b_start - seg_start);
            match &mut run {
                Some((rat, roff, rlen))
                    if *rat + *rlen == at && *roff + *rlen as u64 == file_off =>
                {
                    *rlen += len;
                }
                _ => {
                    flush_run(&mut run, buf)?;
                    run = Some((at, file_off, len));
                }
            }
        }
        filled = b_end;
    }
    flush_run(&mut run, buf)?;
    if filled < end {
        let at = (filled - offset) as usize;
        read_lower(lower, &mut buf[at..], filled)?;
    }
    Ok(())
}
