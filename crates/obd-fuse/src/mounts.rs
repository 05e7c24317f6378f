//! The mount table, stale mounts, and whether FUSE can be used at all.

use std::path::{Path, PathBuf};

use obd_core::{Error, Result};
use rustix::mount::{UnmountFlags, unmount};

/// One line of `/proc/self/mountinfo`, the fields this crate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub(crate) dev: (u32, u32),
    /// Where it is mounted (unescaped).
    pub(crate) mount_point: PathBuf,
    /// Filesystem type (`fuse`, `fuse.sshfs`, `fuseblk`, `ext4`...).
    pub(crate) fs_type: String,
    /// The mount source (`fsname` for FUSE).
    pub(crate) source: String,
}

impl MountEntry {
    /// Whether this is a FUSE mount of any flavour.
    pub(crate) fn is_fuse(&self) -> bool {
        self.fs_type == "fuse" || self.fs_type == "fuseblk" || self.fs_type.starts_with("fuse.")
    }
}

/// Undo the octal escapes (`\040` for a space...) the kernel uses in mountinfo fields.
fn unescape(field: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(field)).into_owned()
}

/// Parse one mountinfo line; `None` for a line of unexpected shape.
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let (maj, min) = l.next()?.split_once(':')?;
    let dev = (maj.parse().ok()?, min.parse().ok()?);
    let _root = l.next()?;
    let mount_point = l.next()?;
    let mut r = right.split(' ');
    let fs_type = unescape(r.next()?);
    let source = unescape(r.next().unwrap_or(""));
    let mount_point = {
        use std::os::unix::ffi::OsStringExt;
        // Keep non-UTF-8 bytes exact: unescape to bytes, not through a lossy string.
        let raw = unescape_bytes(mount_point);
        PathBuf::from(std::ffi::OsString::from_vec(raw))
    };
    Some(MountEntry {
        dev,
        mount_point,
        fs_type,
        source,
    })
}

/// [`unescape`] to raw bytes, for paths that need not be UTF-8.
fn unescape_bytes(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(digits) = b.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
            && let Ok(byte) = u8::try_from(
                digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0')),
            )
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every mount of this process's mount namespace, in mount order.
pub(crate) fn mount_table() -> Vec<MountEntry> {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(s) => s.lines().filter_map(parse_mountinfo_line).collect(),
        Err(e) => {
            tracing::warn!("cannot read /proc/self/mountinfo: {e}");
            Vec::new()
        }
    }
}

/// The topmost mount at `mount_point` (the one path lookups see), if any.
pub(crate) fn top_mount_at(mount_point: &Path) -> Option<MountEntry> {
    mount_table()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mount_point)
}

/// An absolute path for `path` without touching its last component, which may be a FUSE
/// mount whose daemon is gone (any `stat` of it fails with ENOTCONN).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    let err = |e: std::io::Error| Error::io("resolve path", e).with_path(path);
    let Some(name) = path.file_name() else {
        return path.canonicalize().map_err(err);
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let joined = parent.canonicalize().map_err(err)?.join(name);
    // A symlink is mounted on at its target. A dead mount point is never a symlink (and
    // lstat of it fails), so this only follows real links.
    match std::fs::symlink_metadata(&joined) {
        Ok(m) if m.file_type().is_symlink() => joined.canonicalize().map_err(err),
        _ => Ok(joined),
    }
}

/// Loop devices (`/dev/loopN`) whose backing file is `path`, from sysfs.
pub fn loops_backed_by(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
            && Path::new(b.trim_end()) == path
        {
            found.push(format!("/dev/{name}"));
        }
    }
    found.sort();
    found
}

/// Whether a FUSE filesystem is mounted at `path` (from `/proc/self/mountinfo`).
///
/// Works for a stale mount whose daemon died, where any `stat` of `path` fails.
pub fn is_fuse_mounted(path: &Path) -> bool {
    match absolute(path) {
        Ok(p) => top_mount_at(&p).is_some_and(|m| m.is_fuse()),
        Err(_) => false,
    }
}

/// Detach a stale FUSE mount left at `path` by a crashed daemon (lazy unmount, `MNT_DETACH`).
///
/// Returns `Ok(false)` if no FUSE filesystem is mounted there, `Ok(true)` once it is
/// detached. Processes that still hold the file open (a loop device) keep their reference;
/// the kernel frees the mount when they let go.
pub fn clear_stale_mount(path: &Path) -> Result<bool> {
    let abs = absolute(path)?;
    let mut detached = false;
    // Mounts can be stacked; detach every FUSE mount on top.
    while let Some(m) = top_mount_at(&abs) {
        if !m.is_fuse() {
            break;
        }
        match unmount(&abs, UnmountFlags::DETACH) {
            Ok(()) => {
                tracing::info!(path = %abs.display(), "detached FUSE mount {}", m.source);
                detached = true;
            }
            Err(rustix::io::Errno::INVAL) if detached => break,
            Err(e) => {
                return Err(Error::io("lazy unmount", e.into())
                    .with_path(&abs)
                    .context("clearing a stale FUSE mount"));
            }
        }
    }
    Ok(detached)
}

/// Why FUSE cannot be used here: no `/dev/fuse`, no `fuse` filesystem in the kernel, or
/// neither the right to mount (root with `CAP_SYS_ADMIN`) nor `fusermount3`. `None` when
/// mounting should work. For tests (skip with the reason) and for clear errors.
pub fn fuse_unavailable_reason() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    if let Ok(fs) = std::fs::read_to_string("/proc/filesystems")
        && !fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        return Some("the kernel has no `fuse` filesystem type (/proc/filesystems)".into());
    }
    // fuser opens /dev/fuse itself in every case (fusermount3 only does the mount).
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    if has_cap_sys_admin() {
        return None;
    }
    // Without the right to mount, the setuid fusermount3 does it.
    match which("fusermount3") {
        Some(p) if is_setuid(&p) => None,
        Some(p) => Some(format!(
            "not root (no CAP_SYS_ADMIN), and {} is not setuid root",
            p.display()
        )),
        None => Some("not root (no CAP_SYS_ADMIN) and no fusermount3 in PATH".into()),
    }
}

fn is_setuid(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o4000 != 0 && m.uid() == 0)
}

/// Whether this process has `CAP_SYS_ADMIN` in its effective set (needed for mount(2)).
fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return rustix::process::geteuid().is_root();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let l = "36 35 0:53 / /tmp/a\\040b/disk.img rw,nosuid,nodev,relatime shared:1 - fuse obd rw,user_id=0,group_id=0,allow_other";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.dev, (0, 53));
        assert_eq!(m.mount_point, Path::new("/tmp/a b/disk.img"));
        assert_eq!(m.fs_type, "fuse");
        assert_eq!(m.source, "obd");
        assert!(m.is_fuse());
        let l = "25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw";
        let m = parse_mountinfo_line(l).unwrap();
        assert!(!m.is_fuse());
        assert_eq!(m.mount_point, Path::new("/"));
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 x / / rw - ext4 a b").is_none());
    }

    #[test]
    fn unescapes_bytes_and_leaves_bad_escapes() {
        assert_eq!(unescape_bytes("a\\011b\\134c"), b"a\tb\\c");
        assert_eq!(unescape_bytes("x\\9"), b"x\\9");
        assert_eq!(unescape_bytes("end\\"), b"end\\");
        assert_eq!(unescape("fuse.a\\040b"), "fuse.a b");
    }

    #[test]
    fn absolute_does_not_need_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing.img");
        let abs = absolute(&p).unwrap();
        assert_eq!(abs, dir.path().canonicalize().unwrap().join("missing.img"));
        assert!(!is_fuse_mounted(&p));
        assert!(!clear_stale_mount(&p).unwrap());
    }
}
