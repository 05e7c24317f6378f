//! overlaybd-rs FUSE export: a virtual block device as one regular file.
//!
//! Upstream overlaybd presents each device to the kernel through TCMU, which many kernels
//! (including the one CI runs on) lack. This crate presents it as a single regular file
//! instead: the FUSE filesystem is mounted *on the file itself*, so the file's bytes are the
//! device's bytes, and the usual tools take it from there:
//!
//! ```text
//! FuseExport::mount(dev, "/run/obd/disk.img", &FuseOptions::default())?;
//! losetup -f --show /run/obd/disk.img      # -> /dev/loopN
//! mount /dev/loopN /mnt/rootfs             # ext4 (EROFS mounts the file directly)
//! ```
//!
//! It is a thin adapter over [`obd_core::BlockDevice`]:
//!
//! | file operation | device |
//! |---|---|
//! | read | `read_exact_at`, clamped at the end (short read = EOF) |
//! | write | `write_at`; past the end `EFBIG` (the file never grows or shrinks) |
//! | fsync, close (FUSE flush), fsyncdir | `flush`: a write acknowledged by fsync is durable |
//! | fallocate `PUNCH_HOLE\|KEEP_SIZE`, `ZERO_RANGE` | `discard` (discarded ranges read as zeros) |
//! | other fallocate modes | `EOPNOTSUPP` |
//! | truncate to another size, chmod, chown | `EPERM` (times can be set) |
//!
//! Writes and discards may have any offset and length: partial sectors are read, patched
//! and written back whole ([`Aligned`]), since writable layers only take 512-byte sectors.
//! Errors map to errno through [`obd_core::Error::errno`] and are logged with `tracing`.
//!
//! Mounting needs root (`CAP_SYS_ADMIN`; the mount(2) call is made directly, no
//! `fusermount3`) or `fusermount3`; [`fuse_unavailable_reason`] tells which is missing.

#![forbid(unsafe_code)]

mod aligned;
mod export;
mod fs;
mod mounts;

pub use aligned::Aligned;
pub use export::FuseExport;
pub use mounts::{clear_stale_mount, fuse_unavailable_reason, is_fuse_mounted, loops_backed_by};

/// How a device is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseOptions {
    /// FUSE worker threads serving requests (at least 1). Default 2.
    pub threads: usize,
    /// Open the file with `FOPEN_DIRECT_IO`: no page cache for the FUSE file, so a loop
    /// device on it does not cache every block twice. Default false.
    pub direct_io: bool,
    /// Set the FUSE mount's `/sys/class/bdi/*/read_ahead_kb` to this after mounting (the
    /// kernel default of 128 KiB caps sequential reads at 128 KiB per request). `None`
    /// leaves it alone. Default `Some(1024)`.
    pub read_ahead_kb: Option<u32>,
    /// The source name shown in `/proc/mounts`. Default `"obd"`.
    pub fs_name: String,
    /// Let every user (and the loop driver on behalf of any user) open the file
    /// (`allow_other`); otherwise only the mounting user. Default true.
    pub allow_other: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            threads: 2,
            direct_io: false,
            read_ahead_kb: Some(1024),
            fs_name: "obd".to_string(),
            allow_other: true,
        }
    }
}
