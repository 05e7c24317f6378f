//! A device or source backed by a regular file, using positional I/O.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FallocateFlags;

use crate::io::check_range;
use crate::{BlockDevice, Error, ErrorKind, ReadAt, Result};

/// A regular file as a [`ReadAt`] source or, opened writable, a [`BlockDevice`].
///
/// The size is taken at open and is fixed, as a disk's is: writes past the end fail with
/// [`ErrorKind::OutOfRange`] (use [`FileDevice::set_len`] to resize). Discard punches a hole.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: AtomicU64,
    writable: bool,
}

impl FileDevice {
    /// Open `path` read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("open", e).with_path(path))?;
        Self::from_file(file, path, false)
    }

    /// Open an existing `path` for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", e).with_path(path))?;
        Self::from_file(file, path, true)
    }

    /// Wrap an already open file. `path` is used in error messages.
    pub fn from_file(file: File, path: impl AsRef<Path>, writable: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", e).with_path(&path))?
            .len();
        Ok(FileDevice {
            file,
            path,
            size: AtomicU64::new(size),
            writable,
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Resize the file (and the device) to `size` bytes.
    pub fn set_len(&self, size: u64) -> Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| Error::io("truncate", e).with_path(&self.path))?;
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    fn err(&self, op: &str, e: std::io::Error, offset: u64) -> Error {
        Error::io(op, e).at_offset(offset).with_path(&self.path)
    }
}

impl ReadAt for FileDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size(), offset, buf.len() as u64).map_err(|e| e.with_path(&self.path))?;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(
                    ErrorKind::OutOfRange,
                    "file is shorter than expected (truncated?)",
                )
                .at_offset(offset)
                .with_path(&self.path)
            } else {
                self.err("read", e, offset)
            }
        })
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn file_region(&self) -> Option<(&File, u64)> {
        Some((&self.file, 0))
    }
}

impl BlockDevice for FileDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::new(ErrorKind::ReadOnly, "opened read-only")
                .at_offset(offset)
                .with_path(&self.path));
        }
        check_range(self.size(), offset, buf.len() as u64).map_err(|e| e.with_path(&self.path))?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.err("write", e, offset))
    }

    fn flush(&self) -> Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| Error::io("fsync", e).with_path(&self.path))?;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::new(ErrorKind::ReadOnly, "opened read-only")
                .at_offset(offset)
                .with_path(&self.path));
        }
        check_range(self.size(), offset, len).map_err(|e| e.with_path(&self.path))?;
        if len == 0 {
            return Ok(());
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, flags, offset, len) {
            Ok(()) => Ok(()),
            // Filesystems without hole punching: write zeros instead.
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    self.write_at(&zeros[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(self.err("punch hole", e.into(), offset)),
        }
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }
}
