//! A daemon killed with SIGKILL: the kernel fails I/O on its file at once (no hang), and
//! `clear_stale_mount` removes the dead mount. The test binary re-executes itself as the
//! daemon (`child_daemon`, active only when OBD_FUSE_CHILD_PATH is set).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{LoopGuard, random_bytes, skip_reason, skip_reason_with_tools};
use obd_core::{ErrorKind, MemDevice};
use obd_fuse::{FuseExport, FuseOptions, clear_stale_mount, is_fuse_mounted};

const CHILD_ENV: &str = "OBD_FUSE_CHILD_PATH";
const SIZE: usize = 4 << 20;

/// The daemon: export a known pattern at $OBD_FUSE_CHILD_PATH, say READY, serve forever.
#[test]
fn child_daemon() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dev = Arc::new(MemDevice::from_vec(random_bytes(SIZE, 9)));
    let export = FuseExport::mount(dev, Path::new(&path), &FuseOptions::default()).unwrap();
    println!("READY {}", export.path().display());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Kills the child and clears its mount on drop, whatever happened.
struct Daemon {
    child: Child,
    path: PathBuf,
}

impl Daemon {
    fn start(path: &Path) -> Daemon {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_daemon", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let d = Daemon {
            child,
            path: path.to_path_buf(),
        };
        // Wait for READY on a reader thread (bounded), which then keeps draining the
        // child's stdout so that it never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = out;
            let mut line = String::new();
            loop {
                line.clear();
                match out.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.contains("READY ") => break,
                    Ok(_) => {}
                }
            }
            let _ = tx.send(());
            let _ = out.read_to_end(&mut Vec::new());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("child daemon did not become ready");
        d
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = clear_stale_mount(&self.path);
    }
}

/// Run `f` on another thread and fail if it does not finish in time (a hang).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn killed_daemon_leaves_a_stale_mount_that_clear_removes() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let expected = random_bytes(SIZE, 9);
    let mut daemon = Daemon::start(&path);
    assert!(is_fuse_mounted(&path));
    assert!(std::fs::read(&path).unwrap() == expected);
    let f = std::fs::File::open(&path).unwrap();
    daemon.kill();

    // I/O fails at once: ENOTCONN for new requests, or EIO; never a hang.
    let p = path.clone();
    let err = bounded("read of a dead export", move || {
        std::fs::read(p).unwrap_err()
    });
    assert!(
        [libc::ENOTCONN, libc::EIO].contains(&err.raw_os_error().unwrap_or(0)),
        "{err}"
    );
    // An fd opened before the kill may still be served from the page cache (the right
    // bytes), or fail; it never hangs either.
    let want = expected[1 << 20..(1 << 20) + 4096].to_vec();
    bounded("pread on an open fd", move || {
        let mut b = vec![0u8; 4096];
        match f.read_at(&mut b, 1 << 20) {
            Ok(n) => assert!(n == 4096 && b == want, "wrong bytes from a dead export"),
            Err(e) => assert!([libc::ENOTCONN, libc::EIO].contains(&e.raw_os_error().unwrap_or(0))),
        }
    });

    // A new export refuses the stale mount point with a clear error.
    let dev = Arc::new(MemDevice::from_vec(expected.clone()));
    let e = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("clear_stale_mount"), "{e}");

    assert!(is_fuse_mounted(&path));
    assert!(clear_stale_mount(&path).unwrap());
    assert!(!is_fuse_mounted(&path));
    assert!(!clear_stale_mount(&path).unwrap());

    // The path is usable again.
    let export = FuseExport::mount(dev, &path, &FuseOptions::default()).unwrap();
    assert!(std::fs::read(&path).unwrap() == expected);
    export.unmount().unwrap();
}

#[test]
fn killed_daemon_under_a_loop_device_fails_io_without_hanging() {
    skip_unless!(skip_reason_with_tools(&["losetup"]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let expected = random_bytes(SIZE, 9);
    let mut daemon = Daemon::start(&path);
    let mut lo = LoopGuard::attach(&path, true);
    let loopdev = PathBuf::from(lo.dev());
    let head = bounded("loop read", {
        let l = loopdev.clone();
        move || {
            let mut b = vec![0u8; 65536];
            std::fs::File::open(l)
                .unwrap()
                .read_exact_at(&mut b, 0)
                .unwrap();
            b
        }
    });
    assert!(head == expected[..65536]);
    daemon.kill();
    // O_DIRECT so that the read goes to the (dead) FUSE file, not the loop's page cache.
    let err = bounded("loop read after kill", move || {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(loopdev)
            .unwrap();
        let mut b = AlignedBuf::new(65536);
        f.read_exact_at(b.as_mut(), 1 << 20).unwrap_err()
    });
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The stale mount goes even while the loop device still holds the file, and the loop
    // device can then be detached.
    assert!(clear_stale_mount(&path).unwrap());
    assert!(!is_fuse_mounted(&path));
    lo.detach();
}

/// A buffer aligned for O_DIRECT.
struct AlignedBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let v = vec![0u8; len + 4096];
        let off = v.as_ptr().align_offset(4096);
        AlignedBuf { v, off, len }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}
