//! The two open files of a cached blob and the few operations done on them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use obd_core::{Error, Result};
use rustix::fs::FallocateFlags;

use crate::layout;
use crate::meta::{self, MetaHeader};

/// `(device, inode)` of a file.
type FileId = (u64, u64);

/// The data and meta files of one blob, opened read-write.
#[derive(Debug)]
pub(crate) struct Files {
    pub data: File,
    pub meta: File,
    pub data_path: PathBuf,
    pub meta_path: PathBuf,
    data_id: FileId,
    meta_id: FileId,
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
        .map_err(|e| Error::io(if create { "create" } else { "open" }, e).with_path(path))
}

fn id_of(file: &File, path: &Path) -> Result<FileId> {
    let m = file
        .metadata()
        .map_err(|e| Error::io("stat", e).with_path(path))?;
    Ok((m.dev(), m.ino()))
}

impl Files {
    /// Create empty files for `hex` (replacing any), the meta with `header` and every
    /// record absent. The data file is truncated first, so a crash in between leaves no
    /// record pointing at stale data.
    pub fn create(dir: &Path, hex: &str, header: &MetaHeader) -> Result<Files> {
        let sub = dir.join(layout::SUBDIR);
        std::fs::create_dir_all(&sub)
            .map_err(|e| Error::io("create directory", e).with_path(&sub))?;
        let data_path = layout::data_path(dir, hex);
        let meta_path = layout::meta_path(dir, hex);
        let data = open_rw(&data_path, true)?;
        let meta = open_rw(&meta_path, true)?;
        let files = Files {
            data_id: id_of(&data, &data_path)?,
            meta_id: id_of(&meta, &meta_path)?,
            data,
            meta,
            data_path,
            meta_path,
        };
        files.reset_meta(header)?;
        Ok(files)
    }

    /// Open the existing files of `hex`.
    pub fn open(dir: &Path, hex: &str) -> Result<Files> {
        let data_path = layout::data_path(dir, hex);
        let meta_path = layout::meta_path(dir, hex);
        let data = open_rw(&data_path, false)?;
        let meta = open_rw(&meta_path, false)?;
        Ok(Files {
            data_id: id_of(&data, &data_path)?,
            meta_id: id_of(&meta, &meta_path)?,
            data,
            meta,
            data_path,
            meta_path,
        })
    }

    /// Rewrite the meta as header + all records absent (sparse zeros).
    pub fn reset_meta(&self, header: &MetaHeader) -> Result<()> {
        let full = meta::full_len(header.size, header.refill);
        let err = |op: &str, e| Error::io(op, e).with_path(&self.meta_path);
        self.meta.set_len(0).map_err(|e| err("truncate", e))?;
        self.meta
            .write_all_at(&meta::encode_header(header), 0)
            .map_err(|e| err("write", e))?;
        self.meta.set_len(full).map_err(|e| err("truncate", e))
    }

    /// Drop every byte of the data file.
    pub fn truncate_data(&self) -> Result<()> {
        self.data
            .set_len(0)
            .map_err(|e| Error::io("truncate", e).with_path(&self.data_path))
    }

    /// Read exactly `buf.len()` bytes of data at `offset` (short file: `UnexpectedEof`).
    pub fn read_data(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.data.read_exact_at(buf, offset)
    }

    /// Write `buf` to the data file at `offset`.
    pub fn write_data(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.data.write_all_at(buf, offset).map_err(|e| {
            Error::io("write", e)
                .with_path(&self.data_path)
                .at_offset(offset)
        })
    }

    /// Write `buf` to the meta file at `offset`.
    pub fn write_meta(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.meta.write_all_at(buf, offset).map_err(|e| {
            Error::io("write", e)
                .with_path(&self.meta_path)
                .at_offset(offset)
        })
    }

    /// Free `[offset, offset + len)` of the data file (best effort: the bytes are never
    /// trusted again anyway, since their unit is marked absent first).
    pub fn punch(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if let Err(e) = rustix::fs::fallocate(&self.data, flags, offset, len) {
            tracing::debug!(
                path = %self.data_path.display(),
                offset, len, error = %e,
                "cannot punch a hole into the cache data file"
            );
        }
    }

    /// Current length of the data file (0 when it cannot be stat'ed).
    pub fn data_len(&self) -> u64 {
        self.data.metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether both files are still linked at their paths (not deleted or replaced).
    pub fn intact(&self) -> bool {
        let linked = |file: &File, path: &Path, id: FileId| {
            let open_ok = file.metadata().map(|m| m.nlink() > 0).unwrap_or(false);
            let path_ok = std::fs::metadata(path)
                .map(|m| (m.dev(), m.ino()) == id)
                .unwrap_or(false);
            open_ok && path_ok
        };
        linked(&self.data, &self.data_path, self.data_id)
            && linked(&self.meta, &self.meta_path, self.meta_id)
    }
}
