//! File-list prefetch over a real ext4 image made by `mke2fs -d`: the listed files' data
//! blocks (as `debugfs` reports them) are read; directories are walked; missing paths and
//! non-ext4 devices are reported, not fatal. Plus the list parser.

mod prefetch_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use obd_core::{ErrorKind, FileDevice, ReadAt};
use obd_image::prefetch::{MAX_LIST_BYTES, parse_list, prefetch_files};
use prefetch_common::{Counting, covers, logs, random_layer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCK: u64 = 4096;

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// An ext4 image holding a small tree; `None` (after a SKIP line) without e2fsprogs.
struct Image {
    _dir: tempfile::TempDir,
    img: PathBuf,
    debugfs: PathBuf,
}

fn write_random(path: &Path, len: usize, seed: u64) {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill(&mut v[..]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v).unwrap();
}

fn make_image() -> Option<Image> {
    let (Some(mke2fs), Some(debugfs)) = (tool("mke2fs"), tool("debugfs")) else {
        eprintln!("SKIP: mke2fs/debugfs (e2fsprogs) not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello, prefetch\n").unwrap();
    write_random(&root.join("data/big.bin"), 300 * 1024 + 17, 1);
    write_random(&root.join("data/sub/c.bin"), 50 * 1024, 2);
    std::fs::write(root.join("data/sub/empty"), b"").unwrap();
    std::os::unix::fs::symlink("/hello.txt", root.join("data/link")).unwrap();
    write_random(&root.join("other/x.bin"), 100 * 1024, 3);
    let img = dir.path().join("fs.img");
    let out = Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("16M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Image {
        _dir: dir,
        img,
        debugfs,
    })
}

impl Image {
    /// The file's data blocks, from `debugfs -R "blocks <path>"`.
    fn blocks(&self, path: &str) -> Vec<u64> {
        let out = Command::new(&self.debugfs)
            .arg("-R")
            .arg(format!("blocks {path}"))
            .arg(&self.img)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|b| b.parse().unwrap())
            .collect()
    }

    fn device(&self) -> Arc<Counting> {
        Counting::new(Arc::new(FileDevice::open(&self.img).unwrap()))
    }
}

fn assert_blocks_read(img: &Image, dev: &Counting, path: &str) {
    let blocks = img.blocks(path);
    assert!(!blocks.is_empty(), "{path} has no blocks");
    let covered = dev.covered();
    for b in blocks {
        assert!(
            covers(&covered, b * BLOCK, (b + 1) * BLOCK),
            "block {b} of {path} was not read"
        );
    }
}

#[test]
fn listed_files_and_walked_directories_are_read() {
    prefetch_common::capture();
    let Some(img) = make_image() else { return };
    let dev = img.device();
    let list = "# boot files\n/hello.txt\n\n/data/\n/missing.txt\n";
    let paths = parse_list(list).unwrap();
    let stats = prefetch_files(dev.clone(), paths, 4).wait();
    assert!(stats.finished);
    // hello.txt, big.bin, c.bin and empty; the symlink in /data is not followed.
    assert_eq!(stats.reads_done, 4, "{stats:?}");
    assert_eq!(stats.reads_failed, 1, "{stats:?}");
    assert_eq!(stats.bytes, 16 + 300 * 1024 + 17 + 50 * 1024);
    for p in ["/hello.txt", "/data/big.bin", "/data/sub/c.bin"] {
        assert_blocks_read(&img, &dev, p);
    }
    assert!(dev.seen().iter().all(|s| s.background));
    let missing: Vec<_> = logs()
        .into_iter()
        .filter(|l| l.starts_with("WARN") && l.contains("/missing.txt"))
        .collect();
    assert_eq!(missing.len(), 1, "{missing:?}");
}

#[test]
fn a_directory_listed_without_slash_and_the_root_are_walked() {
    let Some(img) = make_image() else { return };
    let dev = img.device();
    let stats = prefetch_files(dev.clone(), vec!["/data/sub".into()], 1).wait();
    assert_eq!((stats.reads_done, stats.reads_failed), (2, 0), "{stats:?}");
    assert_eq!(stats.bytes, 50 * 1024);
    assert_blocks_read(&img, &dev, "/data/sub/c.bin");

    let dev = img.device();
    let stats = prefetch_files(dev.clone(), parse_list("/*\n").unwrap(), 3).wait();
    // Every regular file, lost+found included (a directory with no files).
    assert_eq!((stats.reads_done, stats.reads_failed), (5, 0), "{stats:?}");
    assert_blocks_read(&img, &dev, "/other/x.bin");
}

#[test]
fn a_device_without_ext4_gives_one_warning_and_no_bytes() {
    prefetch_common::capture();
    let dir = tempfile::tempdir().unwrap();
    let (path, _, dev) = random_layer(dir.path(), "not-ext4.img", 4 << 20, 8);
    let stats = prefetch_files(dev, vec!["/etc/".into(), "/bin/sh".into()], 4).wait();
    assert!(stats.finished);
    assert_eq!(
        (stats.bytes, stats.reads_done, stats.reads_failed),
        (0, 0, 0)
    );
    assert_eq!(stats.skipped, 2);
    let name = path.display().to_string();
    let warned: Vec<_> = logs().into_iter().filter(|l| l.contains(&name)).collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("WARN") && warned[0].contains("ext4"),
        "{warned:?}"
    );
}

#[test]
fn stop_is_prompt() {
    let Some(img) = make_image() else { return };
    let slow = Counting::slow(
        Arc::new(FileDevice::open(&img.img).unwrap()),
        Duration::from_millis(30),
    );
    let h = prefetch_files(slow.clone(), vec!["/".into()], 2);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    h.stop();
    let stats = h.wait();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(stats.finished);
    let n = slow.seen().len();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(slow.seen().len(), n);
}

#[test]
fn parse_list_accepts_the_documented_forms() {
    let text = "  /usr/bin/app  \n# comment\n\n/usr/lib/\n/etc/*\n/opt*\n/\n/usr/bin/app\n/a//b/\n";
    assert_eq!(
        parse_list(text).unwrap(),
        vec!["/usr/bin/app", "/usr/lib/", "/etc/", "/opt/", "/", "/a//b/"]
    );
    assert_eq!(parse_list("").unwrap(), Vec::<String>::new());
    assert_eq!(parse_list("/x\r\n/y\r\n").unwrap(), vec!["/x", "/y"]);
}

#[test]
fn parse_list_errors_name_the_line() {
    for (text, line, why) in [
        ("/ok\nrelative/path\n", 2, "not an absolute path"),
        ("/ok\n\n/usr/*/bin\n", 3, "wildcards"),
        ("/a?b\n", 1, "wildcards"),
        ("/a\0b\n", 1, "NUL"),
    ] {
        let e = parse_list(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("line {line}")) && msg.contains(why),
            "{msg}"
        );
    }
    let long = format!("/{}\n", "x".repeat(300));
    assert!(parse_list(&long).unwrap_err().to_string().contains("255"));
    let big = "/a\n".repeat(MAX_LIST_BYTES / 3 + 1);
    let e = parse_list(&big).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn ext4_reader_sees_the_same_bytes_as_the_file() {
    // The counting wrapper is a faithful ReadAt (it is what the other tests trust).
    let dir = tempfile::tempdir().unwrap();
    let (_, data, dev) = random_layer(dir.path(), "d", 256 * 1024, 12);
    let c = Counting::new(dev);
    obd_core::testing::check_read_at(&*c, &data, 512, 1);
    assert!(!c.seen().is_empty());
    assert_eq!(c.size(), data.len() as u64);
}
