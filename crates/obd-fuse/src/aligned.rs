//! Byte-granular writes and discards on top of a sector-granular device.
//!
//! A FUSE file receives writes at any offset and of any length (`dd bs=100`, an editor, a
//! page-cache write of a partial page), while writable overlaybd layers only accept whole
//! 512-byte sectors. [`Aligned`] turns every unaligned write into a read-modify-write of the
//! sectors it touches, and every discard into a discard of its whole sectors plus zero writes
//! for the partial sectors at its ends.
//!
//! Concurrency: aligned writes and discards of whole sectors run in parallel (shared lock);
//! a read-modify-write holds the lock exclusively, so no concurrent write to a neighbouring
//! byte of the same sector can be lost between its read and its write.

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use obd_core::{BlockDevice, ReadAt, Result, SECTOR_SIZE, check_range};

/// A [`BlockDevice`] that accepts any offset and length, over one that may require whole
/// sectors for writes and discards. Reads are passed through unchanged.
pub struct Aligned<D> {
    inner: D,
    rmw: RwLock<()>,
}

impl<D: BlockDevice> Aligned<D> {
    /// Wrap `inner`.
    pub fn new(inner: D) -> Self {
        Aligned {
            inner,
            rmw: RwLock::new(()),
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.rmw.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.rmw.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace `[offset, offset + len)` inside the sectors covering it with `data` (or zeros
    /// when `data` is `None`), by reading those sectors, patching them and writing them back.
    /// The caller holds the exclusive lock.
    fn read_modify_write(&self, data: Option<&[u8]>, offset: u64, len: u64) -> Result<()> {
        let size = self.inner.size();
        let start = offset - offset % SECTOR_SIZE;
        // The covering range ends at a sector boundary, or at the end of a device whose size
        // is not a multiple of the sector size.
        let end = (offset + len).next_multiple_of(SECTOR_SIZE).min(size);
        let mut buf = vec![0u8; (end - start) as usize];
        self.inner.read_exact_at(&mut buf, start)?;
        let from = (offset - start) as usize;
        let to = from + len as usize;
        match data {
            Some(d) => buf[from..to].copy_from_slice(d),
            None => buf[from..to].fill(0),
        }
        self.inner.write_at(&buf, start)
    }
}

fn is_aligned(offset: u64, len: u64) -> bool {
    offset.is_multiple_of(SECTOR_SIZE) && len.is_multiple_of(SECTOR_SIZE)
}

impl<D: BlockDevice> ReadAt for Aligned<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn path(&self) -> Option<&Path> {
        self.inner.path()
    }

    fn file_region(&self) -> Option<(&std::fs::File, u64)> {
        self.inner.file_region()
    }
}

impl<D: BlockDevice> BlockDevice for Aligned<D> {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        check_range(self.inner.size(), offset, len).map_err(|e| e.at_offset(offset))?;
        if len == 0 {
            return Ok(());
        }
        if is_aligned(offset, len) || self.inner.is_read_only() {
            let _g = self.shared();
            return self.inner.write_at(buf, offset);
        }
        let _g = self.exclusive();
        // Whole sectors in the middle go straight through; only the partial sectors at the
        // ends are read, patched and written back.
        let end = offset + len;
        let mid_start = offset.next_multiple_of(SECTOR_SIZE);
        let mid_end = end - end % SECTOR_SIZE;
        if mid_start >= mid_end {
            return self.read_modify_write(Some(buf), offset, len);
        }
        if mid_start > offset {
            let n = (mid_start - offset) as usize;
            self.read_modify_write(Some(&buf[..n]), offset, n as u64)?;
        }
        let a = (mid_start - offset) as usize;
        let b = (mid_end - offset) as usize;
        self.inner.write_at(&buf[a..b], mid_start)?;
        if end > mid_end {
            self.read_modify_write(Some(&buf[b..]), mid_end, end - mid_end)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(self.inner.size(), offset, len).map_err(|e| e.at_offset(offset))?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let mid_start = offset.next_multiple_of(SECTOR_SIZE);
        // A device whose last sector is partial: that sector is discarded whole when the
        // range reaches the end.
        let mid_end = if end == self.inner.size() {
            end
        } else {
            end - end % SECTOR_SIZE
        };
        if is_aligned(offset, len) || (mid_start == offset && mid_end == end) {
            let _g = self.shared();
            return self.inner.discard(offset, len);
        }
        let _g = self.exclusive();
        if mid_start >= mid_end {
            return self.read_modify_write(None, offset, len);
        }
        if mid_start > offset {
            self.read_modify_write(None, offset, mid_start - offset)?;
        }
        self.inner.discard(mid_start, mid_end - mid_start)?;
        if end > mid_end {
            self.read_modify_write(None, mid_end, end - mid_end)?;
        }
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use obd_core::{Error, MemDevice};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A device that, like a writable LSMT layer, rejects anything but whole sectors.
    struct Strict {
        mem: MemDevice,
        writes: AtomicUsize,
    }

    impl ReadAt for Strict {
        fn size(&self) -> u64 {
            self.mem.size()
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.mem.read_exact_at(buf, offset)
        }
    }

    impl BlockDevice for Strict {
        fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
            if !is_aligned(offset, buf.len() as u64) {
                return Err(Error::invalid_input("unaligned write").at_offset(offset));
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.mem.write_at(buf, offset)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn discard(&self, offset: u64, len: u64) -> Result<()> {
            if !is_aligned(offset, len) {
                return Err(Error::invalid_input("unaligned discard").at_offset(offset));
            }
            self.mem.discard(offset, len)
        }
    }

    fn strict(size: usize) -> Aligned<Strict> {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        Aligned::new(Strict {
            mem: MemDevice::from_vec(data),
            writes: AtomicUsize::new(0),
        })
    }

    #[test]
    fn conformance_at_byte_granularity() {
        let dev = strict(256 << 10);
        obd_core::testing::check_block_device(&dev, 1, 2000, 7);
        let expected = dev.inner().mem.to_vec();
        obd_core::testing::check_read_at(&dev, &expected, 1, 8);
        obd_core::testing::check_concurrent_reads(&dev, &expected, 1);
    }

    #[test]
    fn unaligned_write_patches_only_its_bytes() {
        let dev = strict(8192);
        let before = dev.inner().mem.to_vec();
        dev.write_at(&[0xEE; 1000], 300).unwrap();
        let after = dev.inner().mem.to_vec();
        assert_eq!(&after[..300], &before[..300]);
        assert!(after[300..1300].iter().all(|&b| b == 0xEE));
        assert_eq!(&after[1300..], &before[1300..]);
        // Head RMW, one whole sector straight through, tail RMW.
        assert_eq!(dev.inner().writes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn unaligned_discard_zeroes_exactly_its_range() {
        let dev = strict(8192);
        let before = dev.inner().mem.to_vec();
        dev.discard(100, 2000).unwrap();
        let after = dev.inner().mem.to_vec();
        assert_eq!(&after[..100], &before[..100]);
        assert!(after[100..2100].iter().all(|&b| b == 0));
        assert_eq!(&after[2100..], &before[2100..]);
        dev.discard(5000, 10).unwrap();
        let again = dev.inner().mem.to_vec();
        assert!(again[5000..5010].iter().all(|&b| b == 0));
        assert_eq!(again[4999], before[4999]);
        assert_eq!(again[5010], before[5010]);
    }

    #[test]
    fn out_of_range_is_refused_not_truncated() {
        let dev = strict(4096);
        let before = dev.inner().mem.to_vec();
        let e = dev.write_at(&[1; 10], 4090).unwrap_err();
        assert_eq!(e.kind(), obd_core::ErrorKind::OutOfRange);
        assert!(dev.discard(4000, 200).is_err());
        assert_eq!(dev.inner().mem.to_vec(), before);
    }

    #[test]
    fn concurrent_unaligned_writes_to_one_sector_are_not_lost() {
        let dev = std::sync::Arc::new(strict(4096));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let dev = dev.clone();
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        let off = u64::from(t) * 64 + round % 64;
                        dev.write_at(&[t + 1], off).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let data = dev.inner().mem.to_vec();
        for t in 0..8usize {
            assert!(data[t * 64..t * 64 + 64].iter().all(|&b| b == t as u8 + 1));
        }
    }
}
