//! Making an ext4 filesystem on a new (all-zero) device with e2fsprogs' `mke2fs`, without
//! root, loop devices or FUSE:
//!
//! 1. `mke2fs` formats a sparse temporary raw file of the device's size (next to the layer,
//!    so on the same filesystem);
//! 2. the file's allocated extents (`SEEK_DATA` / `SEEK_HOLE`) are copied into the device,
//!    skipping all-zero 4 KiB blocks, since the device already reads zeros there;
//! 3. the device is flushed and the temporary file removed.
//!
//! Options: 4 KiB blocks; `root_owner=0:0` (mke2fs would otherwise give the root directory to
//! the invoking user); `nodiscard` (the file is new, discarding it is pointless). With
//! e2fsprogs ≥ 1.47 `assume_storage_prezeroed=1` skips zeroing inode tables and the journal
//! and marks the inode tables as zeroed, which is exactly true of a new layer; older versions
//! get `lazy_itable_init=0,lazy_journal_init=0` instead, so that the kernel never has to
//! zero the inode tables in the background (which would write into every container's upper
//! layer); the zeros they write are skipped by the copy.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use obd_core::{BlockDevice, Error, ErrorKind, Result};
use rustix::fs::SeekFrom;

/// Filesystem block size.
const FS_BLOCK: usize = 4096;
/// Copy buffer.
const CHUNK: usize = 1 << 20;

/// How to make the filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MkfsOptions {
    /// Volume label (at most 16 bytes).
    pub label: Option<String>,
    /// The `mke2fs` program; `None`: [`find_mke2fs`].
    pub mke2fs: Option<PathBuf>,
}

/// What [`mkfs_ext4`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MkfsStats {
    /// Filesystem size in 4 KiB blocks.
    pub fs_blocks: u64,
    /// Bytes written into the device (non-zero blocks).
    pub bytes_written: u64,
}

/// Removes the temporary image however the run ends.
struct TempImage(PathBuf);

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Environment variable naming the `mke2fs` to use instead of searching for one.
pub const MKE2FS_ENV: &str = "OBD_MKE2FS";

/// Find `mke2fs`: the file named by `$OBD_MKE2FS` when set (`None` if it does not exist),
/// else `PATH`, then the sbin directories non-root users often lack in `PATH`.
pub fn find_mke2fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(MKE2FS_ENV) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("mke2fs"))
        .find(|p| p.is_file())
}

/// `(major, minor)` of the e2fsprogs `mke2fs` at `prog`, from `mke2fs -V`.
fn mke2fs_version(prog: &Path) -> Option<(u32, u32)> {
    let out = Command::new(prog).arg("-V").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().nth(1)?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Make an ext4 filesystem on `dev`, which must read as zeros (a new writable layer).
/// The temporary image is created in `temp_dir`. A missing `mke2fs` is a `NotFound` error
/// naming the e2fsprogs package.
pub fn mkfs_ext4(dev: &dyn BlockDevice, temp_dir: &Path, opts: &MkfsOptions) -> Result<MkfsStats> {
    let size = dev.size();
    if size < 1 << 20 {
        return Err(Error::invalid_input(format!(
            "a {size}-byte device is too small for ext4 (at least 1 MiB)"
        )));
    }
    if let Some(l) = &opts.label
        && l.len() > 16
    {
        return Err(Error::invalid_input(format!(
            "filesystem label '{l}' is longer than 16 bytes"
        )));
    }
    let prog = match &opts.mke2fs {
        Some(p) => p.clone(),
        None => find_mke2fs().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "mke2fs not found ($OBD_MKE2FS, PATH, /sbin, /usr/sbin): install e2fsprogs \
                 (e.g. `apt-get install e2fsprogs` or `dnf install e2fsprogs`)",
            )
        })?,
    };
    let tmp = TempImage(temp_dir.join(format!(
        ".obd-mkfs-{}-{}.img",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp.0)
        .map_err(|e| Error::io("create", e).with_path(&tmp.0))?;
    file.set_len(size)
        .map_err(|e| Error::io("truncate", e).with_path(&tmp.0))?;
    run_mke2fs(&prog, &tmp.0, opts)?;
    let bytes_written = copy_extents(&file, &tmp.0, dev)?;
    dev.flush()?;
    Ok(MkfsStats {
        fs_blocks: size / FS_BLOCK as u64,
        bytes_written,
    })
}

fn run_mke2fs(prog: &Path, image: &Path, opts: &MkfsOptions) -> Result<()> {
    let ext = match mke2fs_version(prog) {
        Some(v) if v >= (1, 47) => "assume_storage_prezeroed=1",
        _ => "lazy_itable_init=0,lazy_journal_init=0",
    };
    let mut args: Vec<OsString> = ["-t", "ext4", "-F", "-q", "-b", "4096", "-E"]
        .map(OsString::from)
        .to_vec();
    args.push(format!("{ext},nodiscard,root_owner=0:0").into());
    if let Some(l) = &opts.label {
        args.push("-L".into());
        args.push(l.into());
    }
    args.push(image.into());
    let out = Command::new(prog)
        .args(&args)
        .output()
        .map_err(|e| Error::io(&format!("run {}", prog.display()), e))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} {} failed ({}): {}",
                prog.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Copy the allocated, non-zero 4 KiB blocks of `file` into `dev` at the same offsets.
fn copy_extents(file: &File, path: &Path, dev: &dyn BlockDevice) -> Result<u64> {
    let size = dev.size();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA support: treat the rest as data.
            Err(rustix::io::Errno::INVAL) => pos,
            Err(e) => return Err(Error::io("seek data", e.into()).with_path(path)),
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(rustix::io::Errno::INVAL) => size,
            Err(e) => return Err(Error::io("seek hole", e.into()).with_path(path)),
        };
        let mut off = start / FS_BLOCK as u64 * FS_BLOCK as u64;
        let end = end
            .div_ceil(FS_BLOCK as u64)
            .saturating_mul(FS_BLOCK as u64)
            .min(size);
        while off < end {
            let n = (end - off).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            file.read_exact_at(chunk, off)
                .map_err(|e| Error::io("read", e).at_offset(off).with_path(path))?;
            written += write_nonzero(dev, chunk, off)?;
            off += n as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(written)
}

/// Write the runs of non-zero 4 KiB blocks of `chunk` (device offset `off`).
fn write_nonzero(dev: &dyn BlockDevice, chunk: &[u8], off: u64) -> Result<u64> {
    let mut written = 0;
    let mut run: Option<usize> = None;
    let blocks = chunk.len().div_ceil(FS_BLOCK);
    for b in 0..=blocks {
        let block = chunk.get(b * FS_BLOCK..((b + 1) * FS_BLOCK).min(chunk.len()));
        let nonzero = block.is_some_and(|s| s.iter().any(|&x| x != 0));
        match (nonzero, run) {
            (true, None) => run = Some(b * FS_BLOCK),
            (false, Some(r)) => {
                let e = (b * FS_BLOCK).min(chunk.len());
                dev.write_at(&chunk[r..e], off + r as u64)?;
                written += (e - r) as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}
