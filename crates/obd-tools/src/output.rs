//! Output files of the tools: created exclusively (or replaced with `-f`), optionally
//! wrapped in overlaybd's one-entry tar.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// An output file being written. With a tar wrapper, the payload starts after room for the
/// tar headers, which are written by [`Output::finish`] once the payload size is known.
pub struct Output {
    file: File,
    path: PathBuf,
    tar: bool,
    base: u64,
}

impl Output {
    /// Create `path` (failing if it exists, unless `force` removes it first).
    pub fn create(path: &Path, force: bool, tar: bool) -> Result<Output> {
        if force {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create {} (use -f to replace an existing file)",
                    path.display()
                )
            })?;
        let base = if tar { obd_tar::layout::HEADER_LEN } else { 0 };
        file.seek(SeekFrom::Start(base))?;
        Ok(Output {
            file,
            path: path.to_path_buf(),
            tar,
            base,
        })
    }

    /// The file, positioned at the start of the payload.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file offset where the payload starts.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The output path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `bytes` at payload offset `offset` (e.g. a ZFile header overwrite).
    pub fn write_payload_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, self.base + offset)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Finish the file: write the tar headers and trailer when wrapping, and sync.
    /// Returns the size of the whole file.
    pub fn finish(mut self) -> Result<u64> {
        let end = self.file.seek(SeekFrom::End(0))?;
        if end < self.base {
            bail!("{}: payload missing", self.path.display());
        }
        if self.tar {
            let size = end - self.base;
            // As upstream: mode of a regular 0644 file, mtime 0 (reproducible blobs).
            let meta = obd_tar::EntryMeta::default();
            let header = obd_tar::layout::wrap_header(&meta.name, size, meta.mode, meta.mtime)?;
            if header.len() as u64 != self.base {
                bail!(
                    "internal error: tar header is {} bytes, expected {}",
                    header.len(),
                    self.base
                );
            }
            self.file.write_all_at(&header, 0)?;
            self.file.write_all(&obd_tar::layout::trailer(size))?;
        }
        self.file
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.path.display()))?;
        Ok(self.file.seek(SeekFrom::End(0))?)
    }
}
