//! An in-memory device, for tests and for small scratch images.

use std::sync::RwLock;

use crate::io::check_range;
use crate::{BlockDevice, ReadAt, Result};

/// A fixed-size device held in memory. Discarded ranges are zeroed.
#[derive(Debug, Default)]
pub struct MemDevice {
    data: RwLock<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn zeroed(size: usize) -> Self {
        Self::from_vec(vec![0; size])
    }

    /// A device holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemDevice {
            data: RwLock::new(data),
        }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ReadAt for MemDevice {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range(data.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }
}

impl BlockDevice for MemDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(data.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range(data.len() as u64, offset, len)?;
        data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}
