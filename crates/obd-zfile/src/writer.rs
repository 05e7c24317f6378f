//! Streaming ZFile writer, byte-compatible with upstream's `zfile_compress`.

use std::io::Write;

use obd_core::{Error, Result};

use crate::codec::BlockCompressor;
use crate::layout::{
    Algorithm, FLAG_DATA, FLAG_DIGEST, FLAG_HEADER, FLAG_HEADER_OVERWRITE, FLAG_SEALED,
    HEADER_SIZE, ZFileHeader, index_crc, upstream_unreadable_blocks, valid_block_size,
};
use crate::pool::{Pool, compress_run};

/// Input bytes per compression job (rounded to whole blocks).
const JOB_BYTES: usize = 128 << 10;

/// How to compress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZFileOptions {
    /// LZ4 (upstream's default) or zstd (level 3).
    pub algorithm: Algorithm,
    /// Uncompressed block size: 4096, 8192, 16384, 32768 or 65536.
    pub block_size: u32,
    /// Append a CRC to each block (`verify=1`; upstream's tools always do).
    pub crc: bool,
    /// Compression threads; 0 or 1 compresses on the calling thread. The output bytes are
    /// the same for any value.
    pub threads: usize,
}

impl Default for ZFileOptions {
    /// LZ4, 4 KiB blocks, CRC on, one thread per available CPU.
    fn default() -> Self {
        ZFileOptions {
            algorithm: Algorithm::Lz4,
            block_size: 4096,
            crc: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl ZFileOptions {
    /// Check the options; fails with [`obd_core::ErrorKind::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        if !valid_block_size(self.block_size) {
            return Err(Error::invalid_input(format!(
                "ZFile block size {} is not one of 4, 8, 16, 32, 64 KiB",
                self.block_size
            )));
        }
        Ok(())
    }
}

/// What [`ZFileWriter::finish`] returns.
#[derive(Debug)]
pub struct ZFileFinish<W> {
    /// The output, flushed.
    pub writer: W,
    /// The final header with the header-overwrite flag (0x1b) and the index location.
    /// Callers that can seek write it over the first 512 bytes (what `overlaybd-commit -z`
    /// does); the file is valid either way.
    pub header: [u8; HEADER_SIZE],
    /// Bytes written: header, blocks, index and trailer.
    pub compressed_size: u64,
    /// Uncompressed bytes consumed.
    pub original_size: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Blocks upstream's reader cannot read (see [`ZFileWriter`]); empty in all but the
    /// incompressible-64-KiB-block case. Callers should warn when it is not empty.
    pub upstream_unreadable: Vec<u64>,
}

enum Engine {
    Inline {
        comp: BlockCompressor,
        output: Vec<u8>,
        lens: Vec<u32>,
    },
    Threads(Pool),
}

/// Compresses a stream into a ZFile, written sequentially to `W`.
///
/// Layout, as upstream writes it: header (flags header|data|digest, info fields zero) →
/// blocks (each followed by its CRC when enabled) → u32 index → trailer (data|sealed|digest,
/// all info). zstd uses level 3. Blocks are compressed on [`ZFileOptions::threads`] threads in
/// runs and written in order, so the output is identical for any thread count.
///
/// Upstream compatibility: upstream's reader fetches at most 64 KiB per block
/// (`MAX_READ_SIZE`) and keeps u16 partial sums per group of `65536 / block_size` blocks.
/// LZ4 and zstd output always satisfies the second rule, but with 64 KiB blocks a block that
/// does not compress to at most 65536 bytes (CRC included) — random or already-compressed
/// data — cannot be fetched by upstream, and no encoding of such data fits (there is no raw
/// block type). Such files are still written (this crate reads them fine, and it is exactly
/// what upstream's own writer produces) and the offending blocks are listed in
/// [`ZFileFinish::upstream_unreadable`] so the caller can warn, naming them; use a block size
/// of 32 KiB or less for upstream-readable output of any data.
///
/// `flush` flushes `W` but keeps a partial block buffered; call [`finish`](Self::finish).
pub struct ZFileWriter<W: Write> {
    sink: Sink<W>,
    opts: ZFileOptions,
    engine: Engine,
    chunk: Vec<u8>,
    chunk_len: usize,
    free_in: Vec<Vec<u8>>,
    raw_size: u64,
    failed: bool,
}

/// The output and what has been written to it.
struct Sink<W> {
    out: W,
    lens: Vec<u32>,
    written: u64,
}

impl<W: Write> Sink<W> {
    fn emit(&mut self, data: &[u8], lens: &[u32]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io("write ZFile blocks", e))?;
        self.lens.extend_from_slice(lens);
        self.written += data.len() as u64;
        Ok(())
    }
}

impl<W: Write> ZFileWriter<W> {
    /// Start a ZFile on `out`: validates `opts` and writes the initial header.
    pub fn new(mut out: W, opts: ZFileOptions) -> Result<Self> {
        opts.validate()?;
        let bs = opts.block_size as usize;
        let mut h = ZFileHeader::new(opts.block_size, opts.algorithm, opts.crc);
        h.flags = FLAG_HEADER | FLAG_DATA | FLAG_DIGEST;
        out.write_all(&h.encode())
            .map_err(|e| Error::io("write ZFile header", e))?;
        let engine = if opts.threads <= 1 {
            Engine::Inline {
                comp: BlockCompressor::new(opts.algorithm, opts.crc)?,
                output: Vec::new(),
                lens: Vec::new(),
            }
        } else {
            Engine::Threads(Pool::new(opts.threads, opts.algorithm, opts.crc, bs)?)
        };
        let job = (JOB_BYTES / bs).max(1) * bs;
        Ok(ZFileWriter {
            sink: Sink {
                out,
                lens: Vec::new(),
                written: HEADER_SIZE as u64,
            },
            opts,
            engine,
            chunk: vec![0u8; job],
            chunk_len: 0,
            free_in: Vec::new(),
            raw_size: 0,
            failed: false,
        })
    }

    /// The options in use.
    pub fn options(&self) -> &ZFileOptions {
        &self.opts
    }

    /// Uncompressed bytes accepted so far.
    pub fn original_size(&self) -> u64 {
        self.raw_size
    }

    /// Compress on this thread `external` (whole chunks of the caller's data) or the
    /// buffered chunk, in chunk-sized runs so the output stays in cache.
    fn run_inline(&mut self, external: Option<&[u8]>) -> Result<()> {
        let len = std::mem::take(&mut self.chunk_len);
        let Engine::Inline { comp, output, lens } = &mut self.engine else {
            return Ok(());
        };
        let input = external.unwrap_or(&self.chunk[..len]);
        let bs = self.opts.block_size as usize;
        for piece in input.chunks(self.chunk.len()) {
            let n = compress_run(comp, self.opts.algorithm, bs, piece, output, lens)?;
            self.sink.emit(&output[..n], lens)?;
        }
        Ok(())
    }

    /// Compress the buffered chunk (or hand it to the pool).
    fn flush_chunk(&mut self) -> Result<()> {
        if self.chunk_len == 0 {
            return Ok(());
        }
        match &mut self.engine {
            Engine::Inline { .. } => self.run_inline(None),
            Engine::Threads(pool) => {
                let next = self
                    .free_in
                    .pop()
                    .unwrap_or_else(|| vec![0u8; self.chunk.len()]);
                let input = std::mem::replace(&mut self.chunk, next);
                pool.submit(input, std::mem::take(&mut self.chunk_len))?;
                let limit = 2 * pool.threads() as u64;
                while self.pool_in_flight() >= limit {
                    self.collect_one()?;
                }
                Ok(())
            }
        }
    }

    fn pool_in_flight(&self) -> u64 {
        match &self.engine {
            Engine::Threads(p) => p.in_flight(),
            Engine::Inline { .. } => 0,
        }
    }

    /// Write out the next finished job, in order.
    fn collect_one(&mut self) -> Result<()> {
        let Engine::Threads(pool) = &mut self.engine else {
            return Ok(());
        };
        let d = pool.next_done()?;
        d.result?;
        self.free_in.push(d.input);
        let r = self.sink.emit(&d.output[..d.used], &d.lens);
        if let Engine::Threads(pool) = &mut self.engine {
            pool.recycle(d.output, d.lens);
        }
        r
    }

    fn accept(&mut self, mut buf: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::invalid_input(
                "ZFile writer failed earlier; output is incomplete",
            ));
        }
        let total = buf.len();
        while !buf.is_empty() {
            let whole = buf.len() / self.chunk.len() * self.chunk.len();
            if self.chunk_len == 0 && whole > 0 && matches!(self.engine, Engine::Inline { .. }) {
                if let Err(e) = self.run_inline(Some(&buf[..whole])) {
                    self.failed = true;
                    return Err(e);
                }
                buf = &buf[whole..];
                continue;
            }
            let n = buf.len().min(self.chunk.len() - self.chunk_len);
            self.chunk[self.chunk_len..self.chunk_len + n].copy_from_slice(&buf[..n]);
            self.chunk_len += n;
            buf = &buf[n..];
            if self.chunk_len == self.chunk.len()
                && let Err(e) = self.flush_chunk()
            {
                self.failed = true;
                return Err(e);
            }
        }
        self.raw_size += total as u64;
        Ok(())
    }

    /// Compress what is buffered, write the index and trailer, and flush.
    pub fn finish(mut self) -> Result<ZFileFinish<W>> {
        if self.failed {
            return Err(Error::invalid_input(
                "ZFile writer failed earlier; output is incomplete",
            ));
        }
        self.flush_chunk()?;
        while self.pool_in_flight() > 0 {
            self.collect_one()?;
        }
        let index_offset = self.sink.written;
        let mut raw = Vec::with_capacity(self.sink.lens.len() * 4);
        for l in &self.sink.lens {
            raw.extend_from_slice(&l.to_le_bytes());
        }
        self.sink
            .out
            .write_all(&raw)
            .map_err(|e| Error::io("write ZFile index", e))?;
        let mut h = ZFileHeader::new(self.opts.block_size, self.opts.algorithm, self.opts.crc);
        h.index_offset = index_offset;
        h.index_size = self.sink.lens.len() as u64;
        h.original_file_size = self.raw_size;
        h.index_crc = index_crc(&self.sink.lens);
        h.flags = FLAG_DATA | FLAG_SEALED | FLAG_DIGEST;
        self.sink
            .out
            .write_all(&h.encode())
            .map_err(|e| Error::io("write ZFile trailer", e))?;
        self.sink
            .out
            .flush()
            .map_err(|e| Error::io("flush ZFile", e))?;
        h.flags = FLAG_HEADER | FLAG_DATA | FLAG_DIGEST | FLAG_HEADER_OVERWRITE;
        let header = h.encode();
        let upstream_unreadable = upstream_unreadable_blocks(&self.sink.lens, self.opts.block_size);
        let Sink { out, lens, .. } = self.sink;
        Ok(ZFileFinish {
            writer: out,
            header,
            compressed_size: index_offset + raw.len() as u64 + HEADER_SIZE as u64,
            original_size: h.original_file_size,
            blocks: lens.len() as u64,
            upstream_unreadable,
        })
    }
}

impl<W: Write> Write for ZFileWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.accept(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.accept(buf)?;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.out.flush()
    }
}
