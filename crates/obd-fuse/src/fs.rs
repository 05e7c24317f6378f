//! The FUSE filesystem: one regular file (the root inode) whose bytes are the device's.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use obd_core::{BlockDevice, Error, ReadAt};
use tracing::{debug, warn};

use crate::aligned::Aligned;

/// How long the kernel may cache the file's attributes. The size never changes, and the
/// only other attributes that can (times) are changed through this filesystem.
const ATTR_TTL: Duration = Duration::from_secs(3600);

/// Largest read or write request asked of the kernel.
pub(crate) const MAX_IO: u32 = 1 << 20;

/// Block size reported by `stat` and `statfs`; the loop driver takes its discard
/// granularity from the latter.
const BLOCK: u32 = 4096;

const FALLOC_FL_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const FALLOC_FL_PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const FALLOC_FL_ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// The file's attributes that are not derived from the device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileMeta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) perm: u16,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
}

/// The filesystem served by the FUSE worker threads.
pub(crate) struct DeviceFs {
    dev: Aligned<Arc<dyn BlockDevice>>,
    size: u64,
    read_only: bool,
    direct_io: bool,
    meta: Mutex<FileMeta>,
    /// Name for log lines (the export's path).
    name: String,
}

fn errno_of(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl DeviceFs {
    pub(crate) fn new(
        dev: Arc<dyn BlockDevice>,
        direct_io: bool,
        meta: FileMeta,
        name: String,
    ) -> Self {
        let size = dev.size();
        let read_only = dev.is_read_only();
        DeviceFs {
            dev: Aligned::new(dev),
            size,
            read_only,
            direct_io,
            meta: Mutex::new(meta),
            name,
        }
    }

    fn meta(&self) -> FileMeta {
        *self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attr(&self) -> FileAttr {
        let m = self.meta();
        FileAttr {
            ino: INodeNo::ROOT,
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            crtime: m.ctime,
            kind: FileType::RegularFile,
            perm: m.perm,
            nlink: 1,
            uid: m.uid,
            gid: m.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    /// Flush the device for `why` and answer the kernel.
    fn answer_flush(&self, why: &str, reply: ReplyEmpty) {
        match self.flush_dev(why) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn flush_dev(&self, op: &str) -> Result<(), Errno> {
        self.dev.flush().map_err(|e| {
            warn!(file = %self.name, "{op}: device flush failed: {e}");
            errno_of(&e)
        })
    }

    /// Check `[offset, offset + len)` for a write-like operation: inside the device, which
    /// never grows. A range past the end is `EFBIG` (as for a file at its maximum size).
    fn check_write_range(&self, offset: u64, len: u64) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::EROFS);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => {
                debug!(file = %self.name, offset, len, "write past the end of the device refused");
                Err(Errno::EFBIG)
            }
        }
    }

    fn fallocate_impl(&self, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
        let op = mode & !FALLOC_FL_KEEP_SIZE;
        if op != FALLOC_FL_PUNCH_HOLE && op != FALLOC_FL_ZERO_RANGE {
            // Plain allocation, collapse, insert...: a virtual disk has a fixed size and no
            // way to reserve space.
            return Err(Errno::EOPNOTSUPP);
        }
        if self.read_only {
            return Err(Errno::EROFS);
        }
        let Some(end) = offset.checked_add(length) else {
            return Err(Errno::EFBIG);
        };
        if end > self.size && !keep_size {
            // Would grow the file.
            return Err(Errno::EFBIG);
        }
        // Like a regular file, the part of a KEEP_SIZE range past the end is ignored.
        let end = end.min(self.size);
        if offset >= end {
            return Ok(());
        }
        // Discarded ranges read back as zeros (the BlockDevice contract), so discard serves
        // both punching a hole and zeroing a range.
        self.dev.discard(offset, end - offset).map_err(|e| {
            warn!(file = %self.name, offset, len = end - offset, "fallocate mode {mode:#x}: discard failed: {e}");
            errno_of(&e)
        })
    }
}

impl Filesystem for DeviceFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(max);
        }
        // The kernel offers at most the bdi's current read-ahead (128 KiB by default); the
        // export raises the bdi's read_ahead_kb after mounting.
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        // Let the kernel keep more read-ahead and loop requests in flight (default 12).
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        debug!(file = %self.name, abi = ?config.kernel_abi(), "FUSE INIT");
        Ok(())
    }

    fn destroy(&mut self) {
        // The session ended (unmounted, from here or from outside): make everything the
        // kernel sent durable.
        let _ = self.flush_dev("session end");
    }

    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::ENOTDIR);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        reply.attr(&ATTR_TTL, &self.attr());
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let cur = self.meta();
        if size.is_some_and(|s| s != self.size) {
            debug!(file = %self.name, ?size, "refused to change the size of a device");
            return reply.error(Errno::EPERM);
        }
        if mode.is_some_and(|m| m & 0o7777 != u32::from(cur.perm))
            || uid.is_some_and(|u| u != cur.uid)
            || gid.is_some_and(|g| g != cur.gid)
        {
            return reply.error(Errno::EPERM);
        }
        if atime.is_some() || mtime.is_some() {
            let resolve = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = atime {
                m.atime = resolve(t);
            }
            if let Some(t) = mtime {
                m.mtime = resolve(t);
            }
            m.ctime = SystemTime::now();
        }
        reply.attr(&ATTR_TTL, &self.attr());
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        if self.read_only && flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let fopen = if self.direct_io {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            // All changes come through this file, so cached pages stay valid across opens.
            FopenFlags::FOPEN_KEEP_CACHE
        };
        reply.opened(FileHandle(0), fopen);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        if offset >= self.size {
            return reply.data(&[]);
        }
        // A short read at the end of the file is how FUSE reports EOF.
        let len = u64::from(size).min(self.size - offset) as usize;
        let mut buf = vec![0u8; len];
        match self.dev.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                warn!(file = %self.name, offset, len, "read failed: {e}");
                reply.error(errno_of(&e));
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Ok(n) = u32::try_from(data.len()) else {
            return reply.error(Errno::EINVAL);
        };
        if let Err(e) = self.check_write_range(offset, data.len() as u64) {
            return reply.error(e);
        }
        match self.dev.write_at(data, offset) {
            Ok(()) => reply.written(n),
            Err(e) => {
                warn!(file = %self.name, offset, len = data.len(), "write failed: {e}");
                reply.error(errno_of(&e));
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.answer_flush("close", reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.answer_flush("fsync", reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.answer_flush("fsyncdir", reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // One file filling the whole filesystem: no free blocks, no free inodes.
        let blocks = self.size.div_ceil(u64::from(BLOCK));
        reply.statfs(blocks, 0, 0, 1, 0, BLOCK, 255, BLOCK);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        if self.read_only && mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.fallocate_impl(offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
