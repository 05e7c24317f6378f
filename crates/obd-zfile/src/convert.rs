//! Whole-stream helpers: compress a reader or file, decompress a ZFile to a writer.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};

use obd_core::{Error, ReadAt, Result, ResultExt};

use crate::reader::ZFileReader;
use crate::writer::{ZFileFinish, ZFileOptions, ZFileWriter};

const IO_CHUNK: usize = 1 << 20;

/// Compress everything `input` yields into a ZFile written to `output`, starting at the
/// file's current position. With `header_overwrite`, the header is then rewritten with the
/// final index location (flag bit 3), as `overlaybd-commit -z` does; without it the output
/// is what `overlaybd-zfile` writes. `progress` is called with the number of input bytes
/// consumed so far. Returns the summary (with `writer: ()`).
pub fn compress_reader<R: Read>(
    mut input: R,
    output: &File,
    opts: &ZFileOptions,
    header_overwrite: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<ZFileFinish<()>> {
    let mut out = output;
    let base = out.stream_position().map_err(|e| Error::io("seek", e))?;
    let mut w = ZFileWriter::new(BufWriter::with_capacity(IO_CHUNK, out), opts.clone())?;
    let mut buf = vec![0u8; IO_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read input", e).at_offset(total)),
        };
        w.write_all(&buf[..n])
            .map_err(|e| Error::io("write ZFile", e))?;
        total += n as u64;
        if let Some(p) = progress {
            p(total);
        }
    }
    let fin = w.finish()?;
    fin.writer
        .into_inner()
        .map_err(|e| Error::io("write ZFile", e.into_error()))?;
    if header_overwrite {
        output
            .write_all_at(&fin.header, base)
            .map_err(|e| Error::io("rewrite ZFile header", e))?;
    }
    Ok(ZFileFinish {
        writer: (),
        header: fin.header,
        compressed_size: fin.compressed_size,
        original_size: fin.original_size,
        blocks: fin.blocks,
        upstream_unreadable: fin.upstream_unreadable,
    })
}

/// Compress the file at `input` into a new (or truncated) file at `output`; see
/// [`compress_reader`]. Errors name the file concerned.
pub fn compress_file(
    input: &Path,
    output: &Path,
    opts: &ZFileOptions,
    header_overwrite: bool,
    progress: Option<&dyn Fn(u64)>,
) -> Result<ZFileFinish<()>> {
    let src = File::open(input).map_err(|e| Error::io("open", e).with_path(input))?;
    let dst = File::create(output).map_err(|e| Error::io("create", e).with_path(output))?;
    let r = compress_reader(src, &dst, opts, header_overwrite, progress).with_path(output)?;
    dst.sync_all()
        .map_err(|e| Error::io("fsync", e).with_path(output))?;
    Ok(r)
}

/// Compress `data` in memory into a complete ZFile (with or without the header rewrite).
pub fn compress_to_vec(
    data: &[u8],
    opts: &ZFileOptions,
    header_overwrite: bool,
) -> Result<Vec<u8>> {
    let mut w = ZFileWriter::new(Vec::new(), opts.clone())?;
    w.write_all(data).map_err(|e| Error::io("compress", e))?;
    let fin = w.finish()?;
    let mut v = fin.writer;
    if header_overwrite {
        v[..fin.header.len()].copy_from_slice(&fin.header);
    }
    Ok(v)
}

/// Write the whole uncompressed content of `reader` to `out` (what `overlaybd-zfile -x`
/// does), decompressing on up to `available_parallelism` threads while writing in order.
/// Returns the bytes written.
pub fn decompress_to<R: ReadAt, W: Write>(reader: &ZFileReader<R>, mut out: W) -> Result<u64> {
    let size = reader.size();
    let bs = reader.block_size() as usize;
    let part = ((IO_CHUNK / bs).max(1) * bs) as u64;
    let chunks = size.div_ceil(part);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(chunks.max(1) as usize);
    let write = |out: &mut W, data: &[u8]| {
        out.write_all(data)
            .map_err(|e| Error::io("write output", e))
    };
    if threads <= 1 {
        let mut buf = vec![0u8; part as usize];
        for k in 0..chunks {
            let off = k * part;
            let n = (size - off).min(part) as usize;
            reader.read_exact_at(&mut buf[..n], off)?;
            write(&mut out, &buf[..n])?;
        }
    } else {
        // Worker t decompresses chunks t, t + threads, ...; the main thread writes them in
        // order, handing buffers back for reuse.
        std::thread::scope(|s| -> Result<()> {
            let mut lanes = Vec::with_capacity(threads);
            for t in 0..threads {
                let (done_tx, done_rx) = sync_channel::<Result<Vec<u8>>>(1);
                let (free_tx, free_rx) = channel::<Vec<u8>>();
                for _ in 0..2 {
                    let _ = free_tx.send(vec![0u8; part as usize]);
                }
                s.spawn(move || {
                    let mut k = t as u64;
                    while k < chunks {
                        let Ok(mut buf) = free_rx.recv() else { return };
                        let off = k * part;
                        let n = (size - off).min(part) as usize;
                        let r = reader.read_exact_at(&mut buf[..n], off).map(|()| {
                            buf.truncate(n);
                            buf
                        });
                        let failed = r.is_err();
                        if done_tx.send(r).is_err() || failed {
                            return;
                        }
                        k += threads as u64;
                    }
                });
                lanes.push((done_rx, free_tx));
            }
            for k in 0..chunks {
                let (done_rx, free_tx) = &lanes[(k % threads as u64) as usize];
                let mut buf = done_rx.recv().map_err(|_| {
                    Error::io("decompress", std::io::Error::other("worker thread exited"))
                })??;
                write(&mut out, &buf)?;
                buf.resize(part as usize, 0);
                let _ = free_tx.send(buf);
            }
            Ok(())
        })?;
    }
    out.flush().map_err(|e| Error::io("flush output", e))?;
    Ok(size)
}
