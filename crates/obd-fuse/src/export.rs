//! Mounting, unmounting and dropping an export.

use std::fs::Metadata;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{BackgroundSession, MountOption, SessionACL};
use obd_core::{BlockDevice, Error, ErrorKind, Result};
use rustix::mount::{UnmountFlags, unmount};
use tracing::{debug, info, warn};

use crate::FuseOptions;
use crate::fs::{DeviceFs, FileMeta};
use crate::mounts::{absolute, fuse_unavailable_reason, top_mount_at};

/// How long to wait for the FUSE threads to end after unmounting, before leaving them to
/// end on their own (the filesystem is then still referenced from elsewhere).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the threads after finding the mount unmounted from outside.
const OUTSIDE_UMOUNT_WAIT: Duration = Duration::from_secs(1);

/// Pauses (ms) between unmount attempts that failed with EBUSY.
/// Pauses (ms) between unmount attempts while the mount is busy: ~3 s in all, because a loop
/// device just detached with `losetup -d` releases the file only after its last opener
/// (udev's blkid probe, say) closes it.
const BUSY_RETRIES: [u64; 9] = [10, 20, 40, 80, 160, 320, 640, 800, 1000];

/// A block device exported as one regular file through FUSE.
///
/// The FUSE filesystem is mounted on the file itself: its root inode is a regular file of
/// the device's size, so `losetup -f --show PATH` and everything else that takes an image
/// file work on it. Dropping the export flushes the device and unmounts (lazily when the
/// file is still in use, so nothing is left behind).
pub struct FuseExport {
    path: PathBuf,
    dev: Arc<dyn BlockDevice>,
    session: Option<BackgroundSession>,
    /// `major:minor` of the mounted FUSE filesystem, to tell our mount from others.
    fuse_dev: (u32, u32),
}

impl std::fmt::Debug for FuseExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseExport")
            .field("path", &self.path)
            .field("fuse_dev", &self.fuse_dev)
            .field("finished", &self.is_finished())
            .finish()
    }
}

fn os_err(op: &str, errno: rustix::io::Errno, path: &Path) -> Error {
    Error::io(op, std::io::Error::from_raw_os_error(errno.raw_os_error())).with_path(path)
}

/// Make sure `path` is a regular file to mount on (creating it, mode 0600, when missing) and
/// return its absolute path and metadata.
fn prepare_mount_point(path: &Path) -> Result<(PathBuf, Metadata)> {
    let abs = absolute(path)?;
    if top_mount_at(&abs).is_some_and(|m| m.is_fuse()) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "a FUSE filesystem is already mounted here (a running export, or a stale one left \
             by a crashed daemon: clear it with `umount -l` or obd_fuse::clear_stale_mount)",
        )
        .with_path(&abs));
    }
    let meta = match std::fs::metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&abs)
        {
            Ok(f) => f.metadata(),
            Err(e) if e.kind() == IoKind::AlreadyExists => std::fs::metadata(&abs),
            Err(e) => Err(e),
        }
        .map_err(|e| Error::io("create the export file", e).with_path(&abs))?,
        Err(e) => return Err(Error::io("stat the export path", e).with_path(&abs)),
    };
    if meta.is_dir() {
        return Err(Error::invalid_input(
            "is a directory: a FUSE export is mounted on a regular file (give a file path; \
             it is created if missing)",
        )
        .with_path(&abs));
    }
    if !meta.is_file() {
        return Err(Error::invalid_input(
            "is not a regular file: a FUSE export is mounted on a regular file",
        )
        .with_path(&abs));
    }
    Ok((abs, meta))
}

fn check_options(opts: &FuseOptions) -> Result<()> {
    let bad = opts.fs_name.is_empty()
        || opts
            .fs_name
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(Error::invalid_input(format!(
            "bad fs_name {:?}: must be non-empty, without commas or spaces",
            opts.fs_name
        )));
    }
    Ok(())
}

/// Raise the read-ahead of the FUSE mount's backing device info (128 KiB by default, which
/// caps every sequential FUSE read at 128 KiB).
fn set_read_ahead(fuse_dev: (u32, u32), kb: u32, path: &Path) {
    let sys = format!("/sys/class/bdi/{}:{}/read_ahead_kb", fuse_dev.0, fuse_dev.1);
    match std::fs::write(&sys, kb.to_string()) {
        Ok(()) => debug!(path = %path.display(), "{sys} = {kb}"),
        Err(e) => warn!(path = %path.display(), "cannot set {sys} to {kb}: {e}"),
    }
}

/// Whether the session threads ended within `limit`.
fn wait_finished(session: &BackgroundSession, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !session.guard.is_finished() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Join the session threads if they end within `limit`; otherwise leave them running,
/// detached: the kernel still has users of the filesystem (a copy of the mount in another
/// mount namespace, or a lazily detached mount a loop device holds), and the threads end
/// when the last one lets go. Nothing is aborted under a user's feet.
fn join_or_detach(session: BackgroundSession, path: &Path, limit: Duration) {
    if !wait_finished(&session, limit) {
        warn!(
            path = %path.display(),
            "the FUSE filesystem is still in use after unmount; its threads serve on until it is released"
        );
        std::mem::drop(session.guard);
        return;
    }
    if let Err(e) = session.join() {
        warn!(path = %path.display(), "FUSE session ended with an error: {e}");
    }
}

/// What [`FuseExport::unmount_ours`] found.
enum Unmounted {
    /// This call unmounted it.
    Now,
    /// It was no longer mounted at the path (unmounted from outside).
    Already,
}

impl FuseExport {
    /// Mount `dev` at `path`; returns once the kernel has completed FUSE INIT and the file is
    /// usable (stat shows the size).
    ///
    /// `path` must be a regular file or not exist (it is then created empty, mode 0600); a
    /// directory is refused. The file shows mode 0644 (0444 and a read-only mount for a
    /// read-only device), the owner of the original file, and the device's size.
    pub fn mount(dev: Arc<dyn BlockDevice>, path: &Path, opts: &FuseOptions) -> Result<FuseExport> {
        if let Some(reason) = fuse_unavailable_reason() {
            return Err(
                Error::unsupported(format!("FUSE cannot be used here: {reason}")).with_path(path),
            );
        }
        check_options(opts).map_err(|e| e.with_path(path))?;
        let (abs, meta) = prepare_mount_point(path)?;
        let read_only = dev.is_read_only();
        let size = obd_core::ReadAt::size(&*dev);
        let now = SystemTime::now();
        let file_meta = FileMeta {
            uid: meta.uid(),
            gid: meta.gid(),
            perm: if read_only { 0o444 } else { 0o644 },
            atime: now,
            mtime: now,
            ctime: now,
        };
        let fs = DeviceFs::new(
            dev.clone(),
            opts.direct_io,
            file_meta,
            abs.display().to_string(),
        );
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName(opts.fs_name.clone()),
            MountOption::DefaultPermissions,
            MountOption::NoSuid,
            MountOption::NoDev,
            if read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        cfg.acl = if opts.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        cfg.n_threads = Some(opts.threads.max(1));

        // Session::new mounts and answers the kernel's INIT before returning.
        let session = fuser::Session::new(fs, &abs, &cfg)
            .map_err(|e| Error::io("mount FUSE", e).with_path(&abs))?;
        let session = session
            .spawn()
            .map_err(|e| Error::io("start the FUSE threads", e).with_path(&abs))?;
        // Identify our mount before anything else can fail, so that dropping the export
        // on an error below unmounts it.
        let fuse_dev = top_mount_at(&abs).filter(|m| m.is_fuse()).map(|m| m.dev);
        let export = FuseExport {
            path: abs,
            dev,
            session: Some(session),
            fuse_dev: fuse_dev.unwrap_or((0, 0)),
        };
        if fuse_dev.is_none() {
            return Err(Error::new(
                ErrorKind::Io,
                "mounted, but the mount does not show in /proc/self/mountinfo",
            )
            .with_path(&export.path));
        }
        // The first stat is answered by the worker threads: the file is usable.
        let st = std::fs::metadata(&export.path)
            .map_err(|e| Error::io("stat the mounted export", e).with_path(&export.path))?;
        let st_dev = (rustix::fs::major(st.dev()), rustix::fs::minor(st.dev()));
        if st_dev != export.fuse_dev || !st.is_file() || st.len() != size {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "mounted export shows {} bytes ({}), expected a regular file of {size} bytes",
                    st.len(),
                    if st.is_file() { "file" } else { "not a file" }
                ),
            )
            .with_path(&export.path));
        }
        if let Some(kb) = opts.read_ahead_kb {
            set_read_ahead(export.fuse_dev, kb, &export.path);
        }
        info!(
            path = %export.path.display(),
            size,
            read_only,
            "FUSE export mounted (fuse device {}:{})",
            export.fuse_dev.0,
            export.fuse_dev.1
        );
        Ok(export)
    }

    /// The absolute path of the exported file (the mount point).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device behind the file.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Flush the device, unmount, join all FUSE threads.
    ///
    /// Fails with a clear error naming the path when the file is busy (`EBUSY`: a loop
    /// device is still attached, or a process has it open), and when the flush fails. The
    /// mount then stays and goes on serving in the background until it is unmounted from
    /// outside (`umount PATH` once the file is free). [`FuseExport::try_unmount`] does the
    /// same but keeps the handle, which is usually what a caller wants.
    pub fn unmount(mut self) -> Result<()> {
        let res = self.try_unmount();
        if res.is_err() {
            // Keep the mount as it is: the threads serve on, detached.
            if let Some(session) = self.session.take() {
                std::mem::drop(session.guard);
            }
        }
        res
    }

    /// Like [`FuseExport::unmount`], but on failure the export stays mounted and owned by
    /// `self`, so the caller can detach the loop device and try again.
    pub fn try_unmount(&mut self) -> Result<()> {
        let Some(session) = self.session.as_ref() else {
            return Ok(());
        };
        self.dev
            .flush()
            .map_err(|e| e.context("flushing the device before unmount"))?;
        let limit = if session.guard.is_finished() {
            Duration::ZERO
        } else {
            match self.unmount_ours(UnmountFlags::empty())? {
                Unmounted::Now => JOIN_TIMEOUT,
                Unmounted::Already => {
                    // Unmounted from outside; after `umount -l` with a loop device still
                    // attached, the kernel keeps the filesystem and it is still in use.
                    if !wait_finished(session, OUTSIDE_UMOUNT_WAIT) {
                        return Err(os_err("unmount", rustix::io::Errno::BUSY, &self.path).context(
                            "the export was detached from outside (umount -l) but is still in use \
                             (a loop device?); it serves on until released",
                        ));
                    }
                    Duration::ZERO
                }
            }
        };
        if let Some(session) = self.session.take() {
            join_or_detach(session, &self.path, limit);
        }
        info!(path = %self.path.display(), "FUSE export unmounted");
        Ok(())
    }

    /// Unmount our mount at `path` with `flags`, unless it is already gone (unmounted from
    /// outside) or another filesystem is mounted over it.
    fn unmount_ours(&self, flags: UnmountFlags) -> Result<Unmounted> {
        match top_mount_at(&self.path) {
            Some(m) if m.dev == self.fuse_dev => {}
            Some(m) if self.path_has_our_mount() => {
                return Err(
                    Error::io("unmount", std::io::Error::from_raw_os_error(libc::EBUSY))
                        .with_path(&self.path)
                        .context(format!(
                            "another filesystem ({} from {}) is mounted over the export",
                            m.fs_type, m.source
                        )),
                );
            }
            _ => return Ok(Unmounted::Already),
        }
        let mut res = unmount(&self.path, flags);
        // A process forked by any thread of this one holds a copy of every open fd until it
        // execs, and a loop device being detached holds the file until its last opener
        // closes: retry for a few seconds before reporting a real user of the file.
        for pause in BUSY_RETRIES {
            if res != Err(rustix::io::Errno::BUSY) {
                break;
            }
            std::thread::sleep(Duration::from_millis(pause));
            res = unmount(&self.path, flags);
        }
        match res {
            Ok(()) => Ok(Unmounted::Now),
            Err(rustix::io::Errno::INVAL) => Ok(Unmounted::Already),
            Err(rustix::io::Errno::BUSY) => {
                let loops = crate::mounts::loops_backed_by(&self.path);
                let why = if loops.is_empty() {
                    "the export is busy: a process still uses the file (close it, then unmount \
                     again)"
                        .to_string()
                } else {
                    format!(
                        "the export is in use by {}; detach it first (losetup -d {}), then \
                         unmount again",
                        loops.join(", "),
                        loops.join(" ")
                    )
                };
                Err(os_err("unmount", rustix::io::Errno::BUSY, &self.path).context(why))
            }
            Err(e) => Err(os_err("unmount", e, &self.path)),
        }
    }

    fn path_has_our_mount(&self) -> bool {
        crate::mounts::mount_table()
            .iter()
            .any(|m| m.mount_point == self.path && m.dev == self.fuse_dev)
    }

    /// Whether the session has ended: unmounted (by [`FuseExport::unmount`] or from outside,
    /// e.g. `umount PATH`), or its connection was aborted.
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }
}

impl Drop for FuseExport {
    /// Best effort: flush the device and unmount; when the file is still in use (a loop
    /// device), detach the mount lazily and let the threads serve the remaining users until
    /// they let go.
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(e) = self.dev.flush() {
            warn!(path = %self.path.display(), "flush on drop failed: {e}");
        }
        let limit = if session.guard.is_finished() {
            Duration::ZERO
        } else {
            match self.unmount_ours(UnmountFlags::empty()) {
                Ok(Unmounted::Now) => JOIN_TIMEOUT,
                Ok(Unmounted::Already) => OUTSIDE_UMOUNT_WAIT,
                Err(e) => {
                    debug!(path = %self.path.display(), "unmount on drop: {e}; detaching lazily");
                    if let Err(e) = self.unmount_ours(UnmountFlags::DETACH) {
                        warn!(path = %self.path.display(), "lazy unmount on drop failed: {e}");
                    }
                    // The kernel keeps the filesystem while the file is in use; the detached
                    // threads end when it is released.
                    Duration::ZERO
                }
            }
        };
        join_or_detach(session, &self.path, limit);
    }
}
