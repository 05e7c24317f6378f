//! Writing a tar-wrapped file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use obd_core::{Error, Result};

use crate::layout::{self, ENTRY_NAME, HEADER_LEN, MAX_OCTAL_6, MAX_OCTAL_11, TarEntry};

/// The metadata written into the tar entry header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Entry name; upstream always writes [`ENTRY_NAME`] (`overlaybd.commit`).
    pub name: String,
    /// `st_mode`, file-type bits included, as upstream writes it (e.g. `0o100644`).
    pub mode: u32,
    /// Modification time in seconds; upstream always writes 0 (built with `NO_TIMESTAMP`).
    pub mtime: u64,
}

impl Default for EntryMeta {
    /// What upstream writes for an output file created with mode 0644: `overlaybd.commit`,
    /// mode `0o100644`, mtime 0. Reproducible: the same payload gives the same bytes.
    fn default() -> Self {
        EntryMeta {
            name: ENTRY_NAME.to_string(),
            mode: 0o100_644,
            mtime: 0,
        }
    }
}

impl EntryMeta {
    /// Name [`ENTRY_NAME`] with the mode and mtime of `md` (a negative mtime becomes 0, one
    /// past 11 octal digits is clamped; mode bits past 6 octal digits are dropped).
    pub fn from_metadata(md: &std::fs::Metadata) -> Self {
        EntryMeta {
            name: ENTRY_NAME.to_string(),
            mode: md.mode() & MAX_OCTAL_6 as u32,
            mtime: u64::try_from(md.mtime()).unwrap_or(0).min(MAX_OCTAL_11),
        }
    }
}

/// Streams a payload of a size known up front into a tar wrapper: the header is written by
/// [`TarWriter::new`], the payload through [`Write`], the padding and end blocks by
/// [`TarWriter::finish`].
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    inner: W,
    size: u64,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    /// Write the header for a payload of exactly `size` bytes to `inner`.
    pub fn new(mut inner: W, size: u64, meta: &EntryMeta) -> Result<Self> {
        let header = layout::wrap_header(&meta.name, size, meta.mode, meta.mtime)?;
        inner
            .write_all(&header)
            .map_err(|e| Error::io("write tar header", e).at_offset(0))?;
        Ok(TarWriter {
            inner,
            size,
            written: 0,
        })
    }

    /// The payload size declared in the header.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Payload bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Check that the whole declared payload was written, then write the padding and the two
    /// end-of-archive blocks, flush, and return the inner writer.
    pub fn finish(mut self) -> Result<W> {
        if self.written != self.size {
            return Err(Error::invalid_input(format!(
                "tar payload is {} bytes but the header declares {}",
                self.written, self.size
            )));
        }
        let at = HEADER_LEN + self.size;
        self.inner
            .write_all(&layout::trailer(self.size))
            .and_then(|()| self.inner.flush())
            .map_err(|e| Error::io("write tar trailer", e).at_offset(at))?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for TarWriter<W> {
    /// Write payload bytes; writing past the declared size fails with `InvalidInput`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.size - self.written {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tar payload would exceed the {} bytes declared in its header",
                    self.size
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Wrap the file `src` into a new file `dst` (which must not exist) the way upstream's `-t`
/// options do: entry `overlaybd.commit`, the mode of the new `dst` (created 0644, subject to
/// the umask), mtime 0. Returns where the payload lies in `dst`.
pub fn wrap_file(src: &Path, dst: &Path) -> Result<TarEntry> {
    wrap(src, dst, None)
}

/// [`wrap_file`] with the entry metadata given explicitly (e.g. [`EntryMeta::default`] for
/// output that does not depend on the umask, or [`EntryMeta::from_metadata`] of `src`).
pub fn wrap_file_with(src: &Path, dst: &Path, meta: &EntryMeta) -> Result<TarEntry> {
    wrap(src, dst, Some(meta))
}

fn wrap(src: &Path, dst: &Path, meta: Option<&EntryMeta>) -> Result<TarEntry> {
    let mut input = File::open(src).map_err(|e| Error::io("open", e).with_path(src))?;
    let size = input
        .metadata()
        .map_err(|e| Error::io("stat", e).with_path(src))?
        .len();
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)
        .map_err(|e| Error::io("create", e).with_path(dst))?;
    let result = write_wrapped(&mut input, size, output, meta, src, dst);
    if result.is_err() {
        // Best effort: do not leave a half-written wrapper behind. The original error matters.
        let _ = std::fs::remove_file(dst);
    }
    result
}

fn write_wrapped(
    input: &mut File,
    size: u64,
    output: File,
    meta: Option<&EntryMeta>,
    src: &Path,
    dst: &Path,
) -> Result<TarEntry> {
    let meta = match meta {
        Some(m) => m.clone(),
        None => {
            let md = output
                .metadata()
                .map_err(|e| Error::io("stat", e).with_path(dst))?;
            EntryMeta {
                mode: md.mode() & MAX_OCTAL_6 as u32,
                ..EntryMeta::default()
            }
        }
    };
    let out = BufWriter::with_capacity(1 << 20, output);
    let mut tar = TarWriter::new(out, size, &meta).map_err(|e| e.with_path(dst))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let at = tar.written();
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", e).at_offset(at).with_path(src)),
        };
        if n as u64 > size - at {
            return Err(Error::corrupt(format!(
                "file grew while being wrapped (it was {size} bytes when opened)"
            ))
            .at_offset(size)
            .with_path(src));
        }
        tar.write_all(&buf[..n]).map_err(|e| {
            Error::io("write", e)
                .at_offset(HEADER_LEN + at)
                .with_path(dst)
        })?;
    }
    if tar.written() != size {
        return Err(Error::corrupt(format!(
            "file shrank to {} bytes while being wrapped (it was {size} bytes when opened)",
            tar.written()
        ))
        .at_offset(tar.written())
        .with_path(src));
    }
    tar.finish()
        .map_err(|e| e.with_path(dst))?
        .into_inner()
        .map_err(|e| Error::io("write", e.into_error()).with_path(dst))?;
    Ok(TarEntry {
        data_offset: HEADER_LEN,
        size: Some(size),
        name: meta.name,
    })
}
