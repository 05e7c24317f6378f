//! The two traits every layer implements.

use std::path::Path;
use std::sync::Arc;

use crate::{Error, ErrorKind, Result};

/// Size of a sector, the unit of LSMT addresses and the alignment of block I/O.
pub const SECTOR_SIZE: u64 = 512;

/// Positional reads from something of known size: a file, a ZFile, a layer, a remote blob.
///
/// Implementations are shared across threads (`&self`), so concurrent reads must be safe.
pub trait ReadAt: Send + Sync {
    /// Size in bytes of the readable content.
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`. Reading past [`ReadAt::size`] is an
    /// [`ErrorKind::OutOfRange`] error; nothing is ever returned short.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The file behind this source, for error messages, when there is one.
    fn path(&self) -> Option<&Path> {
        None
    }

    /// When this source is a plain byte range of a local file: that file and the file offset
    /// of this source's byte 0. Lets bulk copies use `copy_file_range` instead of reading.
    fn file_region(&self) -> Option<(&std::fs::File, u64)> {
        None
    }

    /// Read `len` bytes at `offset` into a new vector.
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_exact_at(&mut v, offset)?;
        Ok(v)
    }
}

/// A virtual disk: readable, writable, flushable, discardable.
///
/// `flush` is the durability barrier: every write that returned before `flush` returned is
/// on stable storage afterwards. Discarded ranges read back as zeros.
pub trait BlockDevice: ReadAt {
    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Drop the data of `[offset, offset + len)`; it reads as zeros afterwards.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    /// Whether writes are refused.
    fn is_read_only(&self) -> bool {
        false
    }
}

/// Check that `[offset, offset + len)` lies inside a source of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::out_of_range(format!(
            "access of {len} bytes at {offset} is beyond the end ({size} bytes)"
        ))),
    }
}

macro_rules! forward_read_at {
    ($($ty:ty),*) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $ty {
            fn size(&self) -> u64 { (**self).size() }
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
                (**self).read_exact_at(buf, offset)
            }
            fn path(&self) -> Option<&Path> { (**self).path() }
            fn file_region(&self) -> Option<(&std::fs::File, u64)> { (**self).file_region() }
        }
    )*};
}
forward_read_at!(&T, Box<T>, Arc<T>);

macro_rules! forward_block_device {
    ($($ty:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $ty {
            fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
                (**self).write_at(buf, offset)
            }
            fn flush(&self) -> Result<()> { (**self).flush() }
            fn discard(&self, offset: u64, len: u64) -> Result<()> {
                (**self).discard(offset, len)
            }
            fn is_read_only(&self) -> bool { (**self).is_read_only() }
        }
    )*};
}
forward_block_device!(&T, Box<T>, Arc<T>);

/// Presents any [`ReadAt`] as a read-only [`BlockDevice`]: writes and discards fail with
/// [`ErrorKind::ReadOnly`], flush succeeds.
#[derive(Debug, Clone)]
pub struct ReadOnly<R>(pub R);

impl<R: ReadAt> ReadAt for ReadOnly<R> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn path(&self) -> Option<&Path> {
        self.0.path()
    }
    fn file_region(&self) -> Option<(&std::fs::File, u64)> {
        self.0.file_region()
    }
}

impl<R: ReadAt> BlockDevice for ReadOnly<R> {
    fn write_at(&self, _buf: &[u8], offset: u64) -> Result<()> {
        Err(Error::new(ErrorKind::ReadOnly, "device is read-only").at_offset(offset))
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, _len: u64) -> Result<()> {
        Err(Error::new(ErrorKind::ReadOnly, "device is read-only").at_offset(offset))
    }
    fn is_read_only(&self) -> bool {
        true
    }
}
