//! Test devices: an NBD client pool as a `BlockDevice`, and a probing memory device.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use obd_core::{BlockDevice, Error, ErrorKind, MemDevice, ReadAt};
use obd_nbd::NbdAddr;

use super::{Client, EINVAL, ENOSPC, EPERM, connect};

/// A pool of NBD connections presented as a [`BlockDevice`], so the conformance suites of
/// `obd_core::testing` can run against an export end to end.
pub struct RemoteDevice {
    conns: Vec<Mutex<Client>>,
    next: AtomicUsize,
    size: u64,
}

impl RemoteDevice {
    pub fn connect(addr: &NbdAddr, name: &str, connections: usize) -> RemoteDevice {
        let conns: Vec<_> = (0..connections)
            .map(|_| Mutex::new(connect(addr, name)))
            .collect();
        let size = conns[0].lock().unwrap().size;
        RemoteDevice {
            conns,
            next: AtomicUsize::new(0),
            size,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        f(&mut self.conns[i].lock().unwrap())
    }
}

fn nbd_error(err: u32, off: u64) -> Error {
    let kind = match err {
        EINVAL | ENOSPC => ErrorKind::OutOfRange,
        EPERM => ErrorKind::ReadOnly,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("NBD error {err}")).at_offset(off)
}

const CHUNK: usize = 8 << 20;

impl ReadAt for RemoteDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> obd_core::Result<()> {
        if buf.is_empty() {
            return self
                .with(|c| c.read(offset, 0))
                .map(drop)
                .map_err(|e| nbd_error(e, offset));
        }
        for (i, chunk) in buf.chunks_mut(CHUNK).enumerate() {
            let off = offset.saturating_add((i * CHUNK) as u64);
            let data = self
                .with(|c| c.read(off, chunk.len() as u32))
                .map_err(|e| nbd_error(e, off))?;
            chunk.copy_from_slice(&data);
        }
        Ok(())
    }
}

impl BlockDevice for RemoteDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> obd_core::Result<()> {
        for (i, chunk) in buf.chunks(CHUNK).enumerate() {
            let off = offset.saturating_add((i * CHUNK) as u64);
            self.with(|c| c.write(off, chunk, 0))
                .map_err(|e| nbd_error(e, off))?;
        }
        if buf.is_empty() {
            self.with(|c| c.write(offset, &[], 0))
                .map_err(|e| nbd_error(e, offset))?;
        }
        Ok(())
    }
    fn flush(&self) -> obd_core::Result<()> {
        // Multi-conn: one flush covers the writes of every connection.
        self.with(|c| c.flush()).map_err(|e| nbd_error(e, 0))
    }
    fn discard(&self, offset: u64, len: u64) -> obd_core::Result<()> {
        self.with(|c| c.trim(offset, len as u32, 0))
            .map_err(|e| nbd_error(e, offset))
    }
}

/// A memory device that counts calls and can fail, refuse to discard, or be slow.
#[derive(Default)]
pub struct Probe {
    pub inner: MemDevice,
    pub flushes: AtomicUsize,
    pub discards: AtomicUsize,
    pub writes: AtomicUsize,
    pub writes_started: AtomicUsize,
    /// Reads touching `[start, end)` fail with this errno.
    pub fail_reads: Option<(u64, u64, i32)>,
    /// Writes touching `[start, end)` fail with this errno.
    pub fail_writes: Option<(u64, u64, i32)>,
    /// Flushes fail with this errno.
    pub fail_flush: Option<i32>,
    pub discard_unsupported: bool,
    /// Reads starting at this offset take this long.
    pub slow_reads: Option<(u64, std::time::Duration)>,
    /// Every write takes this long.
    pub write_delay: Option<std::time::Duration>,
}

impl Probe {
    pub fn new(content: Vec<u8>) -> Probe {
        Probe {
            inner: MemDevice::from_vec(content),
            ..Probe::default()
        }
    }
}

fn hits(range: Option<(u64, u64, i32)>, off: u64, len: u64) -> Option<i32> {
    let (s, e, errno) = range?;
    (off < e && off + len.max(1) > s).then_some(errno)
}

fn os_error(op: &str, errno: i32, off: u64) -> Error {
    Error::io(op, io::Error::from_raw_os_error(errno)).at_offset(off)
}

impl ReadAt for Probe {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> obd_core::Result<()> {
        if let Some((o, d)) = self.slow_reads
            && o == offset
        {
            std::thread::sleep(d);
        }
        if let Some(errno) = hits(self.fail_reads, offset, buf.len() as u64) {
            return Err(os_error("probe read", errno, offset));
        }
        self.inner.read_exact_at(buf, offset)
    }
}

impl BlockDevice for Probe {
    fn write_at(&self, buf: &[u8], offset: u64) -> obd_core::Result<()> {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.write_delay {
            std::thread::sleep(d);
        }
        if let Some(errno) = hits(self.fail_writes, offset, buf.len() as u64) {
            return Err(os_error("probe write", errno, offset));
        }
        self.inner.write_at(buf, offset)?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&self) -> obd_core::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        match self.fail_flush {
            Some(errno) => Err(os_error("probe fsync", errno, 0)),
            None => Ok(()),
        }
    }
    fn discard(&self, offset: u64, len: u64) -> obd_core::Result<()> {
        if self.discard_unsupported {
            return Err(Error::unsupported("probe cannot discard"));
        }
        self.inner.discard(offset, len)?;
        self.discards.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
