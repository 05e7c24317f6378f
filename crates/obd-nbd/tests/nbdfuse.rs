//! A real kernel mount through the server: ext4 image (made by mke2fs) → FileDevice → NBD
//! (unix socket and TCP) → nbdfuse → loop device → mount, write files, unmount, then check
//! the image with e2fsck/debugfs and mount it again read-only through NBD.
//! Needs root, /dev/fuse and the tools; skips with a printed reason otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::pattern;
use common::tools::{have, is_mounted, is_root, run_ok, run_timeout, wait_for};
use obd_core::{BlockDevice, FileDevice};
use obd_nbd::{NbdAddr, NbdServer};

const IMAGE_SIZE: u64 = 96 << 20;
const TOOLS: &[&str] = &[
    "nbdfuse", "losetup", "mke2fs", "mount", "umount", "e2fsck", "debugfs",
];

fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP: {test}: needs root (loop devices, mount)");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: {test}: /dev/fuse is missing");
        return false;
    }
    have(test, TOOLS)
}

/// Undoes the mount stack in reverse order, also when the test fails.
#[derive(Default)]
struct Stack {
    fuse: Option<(PathBuf, Child)>,
    loop_dev: Option<String>,
    ext4: Option<PathBuf>,
}

impl Stack {
    /// nbdfuse on `mnt`, exposing the export as `mnt/nbd-export.img`.
    fn fuse(&mut self, mnt: &Path, uri: &str, read_only: bool) -> PathBuf {
        std::fs::create_dir_all(mnt).unwrap();
        let mut cmd = Command::new("nbdfuse");
        if read_only {
            cmd.arg("-r");
        }
        // Its output goes to a file: an inherited pipe would outlive a failed test.
        let log = std::fs::File::create(mnt.with_extension("log")).unwrap();
        let child = cmd
            .arg(mnt.join("nbd-export.img"))
            .arg(uri)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nbdfuse");
        self.fuse = Some((mnt.to_path_buf(), child));
        let file = mnt.join("nbd-export.img");
        wait_for("the nbdfuse mount", Duration::from_secs(20), || {
            is_mounted(mnt) && file.exists()
        });
        file
    }

    /// `losetup -f --show`, retried: parallel tests (ours and other crates') race for the
    /// free loop devices.
    fn attach_loop(&mut self, file: &Path, read_only: bool) -> String {
        let mut last = String::new();
        for _ in 0..20 {
            let mut cmd = Command::new("losetup");
            if read_only {
                cmd.arg("-r");
            }
            let o = run_timeout(
                cmd.args(["-f", "--show"]).arg(file),
                Duration::from_secs(60),
            );
            if o.status.success() {
                let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
                assert!(dev.starts_with("/dev/loop"), "{dev}");
                self.loop_dev = Some(dev.clone());
                return dev;
            }
            last = String::from_utf8_lossy(&o.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("losetup {}: {last}", file.display());
    }

    fn mount(&mut self, dev: &str, mnt: &Path, read_only: bool) {
        std::fs::create_dir_all(mnt).unwrap();
        let opts = if read_only { "ro" } else { "rw" };
        run_ok(
            Command::new("mount")
                .args(["-t", "ext4", "-o", opts, dev])
                .arg(mnt),
        );
        self.ext4 = Some(mnt.to_path_buf());
    }

    /// Unmount everything in order; with `strict`, each step must succeed. A step is only
    /// forgotten once it worked, so the guard's drop retries what a failed test left.
    fn teardown(&mut self, strict: bool) {
        let umount = |m: &Path| {
            // A fresh unmount can be refused for a moment ("target is busy"): retry.
            let mut last = None;
            for _ in 0..50 {
                let mut cmd = Command::new("umount");
                if !strict {
                    cmd.arg("-l");
                }
                let o = run_timeout(cmd.arg(m), Duration::from_secs(60));
                if o.status.success() {
                    return;
                }
                last = Some(String::from_utf8_lossy(&o.stderr).into_owned());
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                !strict,
                "umount {}: {}",
                m.display(),
                last.unwrap_or_default()
            );
        };
        if let Some(m) = &self.ext4 {
            umount(m);
            self.ext4 = None;
        }
        if let Some(d) = &self.loop_dev {
            let o = run_timeout(
                Command::new("losetup").arg("-d").arg(d),
                Duration::from_secs(60),
            );
            if strict {
                assert!(
                    o.status.success(),
                    "losetup -d {d}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            // Detaching completes asynchronously; the FUSE file stays busy until it has.
            for _ in 0..250 {
                let o = run_timeout(
                    Command::new("losetup")
                        .args(["-n", "-O", "BACK-FILE"])
                        .arg(d),
                    Duration::from_secs(60),
                );
                if !o.status.success() || o.stdout.iter().all(u8::is_ascii_whitespace) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.loop_dev = None;
        }
        if let Some((m, child)) = &mut self.fuse {
            if is_mounted(m) {
                umount(m);
            }
            // nbdfuse exits once unmounted.
            let mut exited = false;
            for _ in 0..500 {
                if child.try_wait().unwrap().is_some() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
            let log = std::fs::read_to_string(m.with_extension("log")).unwrap_or_default();
            self.fuse = None;
            assert!(
                exited || !strict,
                "nbdfuse did not exit after unmount: {log}"
            );
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.teardown(false);
    }
}

fn debugfs_cat(image: &Path, file: &str) -> Vec<u8> {
    let o = run_timeout(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {file}"))
            .arg(image),
        Duration::from_secs(60),
    );
    assert!(o.status.success());
    o.stdout
}

fn small_file(i: usize) -> Vec<u8> {
    format!("small file {i}\n").repeat(i + 1).into_bytes()
}

fn mount_write_check(transport: &str, make_addr: impl Fn(&Path) -> NbdAddr) {
    // OBD_TEST_LOG=debug shows the server's log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("OBD_TEST_LOG"))
        .with_writer(std::io::stderr)
        .try_init();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("ext4.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(IMAGE_SIZE)
        .unwrap();
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "nbdtest"])
            .arg(&image),
    );
    let big = pattern(9 << 20, 77);

    // 1. Read-write: write a tree through NBD.
    let dev = Arc::new(FileDevice::open_rw(&image).unwrap());
    let server = NbdServer::start(dev, &make_addr(work.path()), "ext4").unwrap();
    let uri = server.addr().uri("ext4");
    let mut stack = Stack::default();
    let file = stack.fuse(&work.path().join("fuse"), &uri, false);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), IMAGE_SIZE);
    let loop_dev = stack.attach_loop(&file, false);
    let mnt = work.path().join("mnt");
    stack.mount(&loop_dev, &mnt, false);
    std::fs::write(mnt.join("big.bin"), &big).unwrap();
    std::fs::create_dir(mnt.join("dir")).unwrap();
    for i in 0..200 {
        std::fs::write(mnt.join(format!("dir/f{i}.txt")), small_file(i)).unwrap();
    }
    run_ok(&mut Command::new("sync"));
    assert!(std::fs::read(mnt.join("big.bin")).unwrap() == big);
    stack.teardown(true);
    wait_for("nbdfuse to disconnect", Duration::from_secs(10), || {
        server.connections() == 0
    });
    server.shutdown().unwrap();

    // 2. The image is a clean ext4 with the files, as seen without NBD.
    let fsck = run_timeout(
        Command::new("e2fsck").arg("-fn").arg(&image),
        Duration::from_secs(60),
    );
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert!(
        debugfs_cat(&image, "/big.bin") == big,
        "big.bin in the image"
    );
    assert_eq!(debugfs_cat(&image, "/dir/f123.txt"), small_file(123));

    // 3. Read-only: mount again through NBD and compare every file.
    let ro_dev = Arc::new(FileDevice::open(&image).unwrap());
    assert!(ro_dev.is_read_only());
    let server = NbdServer::start(ro_dev, &make_addr(work.path()), "ext4").unwrap();
    let uri = server.addr().uri("ext4");
    let mut stack = Stack::default();
    let file = stack.fuse(&work.path().join("fuse"), &uri, true);
    let loop_dev = stack.attach_loop(&file, true);
    stack.mount(&loop_dev, &mnt, true);
    assert!(std::fs::read(mnt.join("big.bin")).unwrap() == big);
    for i in 0..200 {
        assert_eq!(
            std::fs::read(mnt.join(format!("dir/f{i}.txt"))).unwrap(),
            small_file(i)
        );
    }
    assert!(
        std::fs::write(mnt.join("new"), b"x").is_err(),
        "read-only mount"
    );
    stack.teardown(true);
    server.shutdown().unwrap();
    eprintln!("nbdfuse over {transport}: ext4 written, checked and read back");
}

#[test]
fn ext4_through_nbdfuse_over_unix_socket() {
    if !can_run("nbdfuse over unix socket") {
        return;
    }
    mount_write_check("unix socket", |dir| NbdAddr::Unix(dir.join("nbd.sock")));
}

#[test]
fn ext4_through_nbdfuse_over_tcp() {
    if !can_run("nbdfuse over TCP") {
        return;
    }
    mount_write_check("TCP", |_| NbdAddr::Tcp("127.0.0.1:0".into()));
}
