//! Helpers shared by the FUSE integration tests: skip checks, cleanup guards, a counting
//! device.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use obd_core::{BlockDevice, MemDevice, ReadAt, Result};
use rand::{Rng, SeedableRng};

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if let Some(r) = obd_fuse::fuse_unavailable_reason() {
        return Some(r);
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root (the tests mount directly and use loop devices)".into());
    }
    None
}

/// `skip_reason` plus the external tools a test needs.
pub fn skip_reason_with_tools(tools: &[&str]) -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            || Path::new("/usr/sbin").join(t).is_file()
            || Path::new("/sbin").join(t).is_file();
        if !found {
            return Some(format!("{t} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (no loop driver)".into());
    }
    None
}

/// Return from the test with a printed reason when it cannot run here.
#[macro_export]
macro_rules! skip_unless {
    ($reason:expr) => {
        if let Some(r) = $reason {
            eprintln!("SKIP: {r}");
            return;
        }
    };
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

/// Run a command, returning stdout; panics with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device attached to a file; detached on drop.
pub struct LoopGuard {
    pub dev: Option<String>,
}

impl LoopGuard {
    /// `losetup -f --show [-r] file`, retried: parallel tests race for free loop devices.
    pub fn attach(file: &Path, read_only: bool) -> LoopGuard {
        let mut last = String::new();
        for _ in 0..10 {
            let mut args = vec!["-f", "--show"];
            if read_only {
                args.push("-r");
            }
            let file = file.to_str().unwrap();
            args.push(file);
            let out = Command::new("losetup").args(&args).output().unwrap();
            if out.status.success() {
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return LoopGuard { dev: Some(dev) };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("losetup {} failed: {last}", file.display());
    }

    pub fn dev(&self) -> &str {
        self.dev.as_deref().unwrap()
    }

    /// Detach now, checking for errors.
    pub fn detach(&mut self) {
        if let Some(d) = self.dev.take() {
            run("losetup", &["-d", &d]);
            // Detaching is asynchronous when the device was just used; wait until the
            // loop device has let go of the file.
            wait_until(Duration::from_secs(10), || {
                let out = Command::new("losetup")
                    .args(["-n", "-O", "BACK-FILE", &d])
                    .output();
                out.map(|o| !o.status.success() || o.stdout.iter().all(|b| b.is_ascii_whitespace()))
                    .unwrap_or(true)
            });
        }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Some(d) = self.dev.take() {
            let _ = Command::new("losetup").args(["-d", &d]).status();
        }
    }
}

/// A filesystem mounted at a directory; unmounted on drop.
pub struct MountGuard {
    pub dir: Option<PathBuf>,
}

impl MountGuard {
    pub fn mount(dev: &str, dir: &Path, opts: &str) -> MountGuard {
        run("mount", &["-o", opts, dev, dir.to_str().unwrap()]);
        MountGuard {
            dir: Some(dir.to_path_buf()),
        }
    }

    pub fn umount(&mut self) {
        if let Some(d) = self.dir.take() {
            run("umount", &[d.to_str().unwrap()]);
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let st = Command::new("umount").arg(&d).status();
            if !st.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&d).status();
            }
        }
    }
}

/// Poll `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A memory device that counts flushes and records discards.
pub struct Counting {
    pub mem: MemDevice,
    pub flushes: AtomicUsize,
    pub discards: Mutex<Vec<(u64, u64)>>,
}

impl Counting {
    pub fn new(data: Vec<u8>) -> Counting {
        Counting {
            mem: MemDevice::from_vec(data),
            flushes: AtomicUsize::new(0),
            discards: Mutex::new(Vec::new()),
        }
    }

    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }
}

impl ReadAt for Counting {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.mem.read_exact_at(buf, offset)
    }
}

impl BlockDevice for Counting {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.mem.write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.discards.lock().unwrap().push((offset, len));
        self.mem.discard(offset, len)
    }
}

/// The `Threads:` line of /proc/self/status.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
