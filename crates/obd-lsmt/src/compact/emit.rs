//! Writing a compaction [`Plan`]: to any `Write`, or positionally to a file with
//! `copy_file_range` for file-backed sources.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use obd_core::{Error, ErrorKind, ReadAt, Result};
use rustix::io::Errno;

use super::{CopyOp, Plan, source_err};
use crate::layout::HT_SIZE;

/// Largest chunk read from a source at once.
const CHUNK: u64 = 4 << 20;

fn chunk_buf(plan: &Plan) -> Vec<u8> {
    let max = plan
        .copies
        .iter()
        .map(|c| c.len)
        .max()
        .unwrap_or(0)
        .min(CHUNK);
    vec![0u8; max as usize]
}

fn source_of<'a>(sources: &[&'a dyn ReadAt], c: &CopyOp) -> Result<&'a dyn ReadAt> {
    sources
        .get(usize::from(c.src))
        .copied()
        .ok_or_else(|| Error::invalid_input(format!("no source {}", c.src)))
}

/// Read `buf.len()` bytes of a source, reporting a short source as corruption.
fn read_src(src: &dyn ReadAt, buf: &mut [u8], off: u64) -> Result<()> {
    src.read_exact_at(buf, off).map_err(|e| {
        let e = if e.kind() == ErrorKind::OutOfRange {
            Error::corrupt(format!(
                "source ends before the {} bytes at offset {off} its index maps (truncated?)",
                buf.len()
            ))
            .at_offset(off)
        } else {
            e.at_offset(off)
        };
        source_err(src, e).context("compacting")
    })
}

fn write_err(e: std::io::Error, at: u64) -> Error {
    Error::io("write", e)
        .at_offset(at)
        .context("writing the committed layer")
}

/// Stream the layer to `out`.
pub(super) fn to_writer(plan: &Plan, sources: &[&dyn ReadAt], out: &mut impl Write) -> Result<()> {
    out.write_all(&plan.header).map_err(|e| write_err(e, 0))?;
    let mut buf = chunk_buf(plan);
    for c in &plan.copies {
        let src = source_of(sources, c)?;
        let mut done = 0u64;
        while done < c.len {
            let n = (c.len - done).min(CHUNK) as usize;
            let b = &mut buf[..n];
            read_src(src, b, c.src_off + done)?;
            out.write_all(b)
                .map_err(|e| write_err(e, c.dst_off + done))?;
            done += n as u64;
        }
    }
    let at = plan.stats.index_offset;
    out.write_all(&plan.index).map_err(|e| write_err(e, at))?;
    let at = at + plan.index.len() as u64;
    out.write_all(&plan.trailer).map_err(|e| write_err(e, at))?;
    out.flush().map_err(|e| write_err(e, at + HT_SIZE as u64))
}

/// Copy with `copy_file_range` while the kernel supports it for this pair of files.
/// Returns how many bytes were copied; the caller copies the rest by hand.
fn kernel_copy(src: &dyn ReadAt, file: &File, base: u64, c: &CopyOp, out: &File) -> Result<u64> {
    let mut done = 0u64;
    while done < c.len {
        let mut off_in = base + c.src_off + done;
        let mut off_out = c.dst_off + done;
        let want = (c.len - done).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(file, Some(&mut off_in), out, Some(&mut off_out), want) {
            Ok(0) => {
                let e = Error::corrupt(format!(
                    "source ends before the {} bytes at offset {} its index maps (truncated?)",
                    c.len - done,
                    c.src_off + done
                ))
                .at_offset(c.src_off + done);
                return Err(source_err(src, e).context("compacting"));
            }
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            // Not supported between these files (old kernel, cross-filesystem, special
            // file): fall back to reading and writing.
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::BADF) => {
                return Ok(done);
            }
            Err(e) => {
                return Err(Error::io("copy_file_range", e.into())
                    .at_offset(c.dst_off + done)
                    .context("writing the committed layer"));
            }
        }
    }
    Ok(done)
}

/// Write the layer at offset 0 of `out` with positional I/O, then cut it to size.
pub(super) fn to_file(plan: &Plan, sources: &[&dyn ReadAt], out: &File) -> Result<()> {
    // Positional writes to an O_APPEND file land at its end on Linux: refuse.
    let flags = rustix::fs::fcntl_getfl(out)
        .map_err(|e| Error::io("fcntl", e.into()).context("checking the output file"))?;
    if flags.contains(rustix::fs::OFlags::APPEND) {
        return Err(Error::invalid_input(
            "the output file is open in append mode; positional writes need it without",
        ));
    }
    let werr = |e: std::io::Error, at: u64| write_err(e, at);
    out.write_all_at(&plan.header, 0).map_err(|e| werr(e, 0))?;
    let mut buf: Option<Vec<u8>> = None;
    for c in &plan.copies {
        let src = source_of(sources, c)?;
        let mut done = match src.file_region() {
            Some((file, base)) => kernel_copy(src, file, base, c, out)?,
            None => 0,
        };
        while done < c.len {
            let b = buf.get_or_insert_with(|| chunk_buf(plan));
            let n = (c.len - done).min(CHUNK) as usize;
            let b = &mut b[..n];
            read_src(src, b, c.src_off + done)?;
            out.write_all_at(b, c.dst_off + done)
                .map_err(|e| werr(e, c.dst_off + done))?;
            done += n as u64;
        }
    }
    let at = plan.stats.index_offset;
    out.write_all_at(&plan.index, at).map_err(|e| werr(e, at))?;
    let at = at + plan.index.len() as u64;
    out.write_all_at(&plan.trailer, at)
        .map_err(|e| werr(e, at))?;
    out.set_len(plan.stats.file_size)
        .map_err(|e| Error::io("truncate", e).context("writing the committed layer"))
}
