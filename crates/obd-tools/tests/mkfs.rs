//! `overlaybd-create --mkfs` / `obd create --mkfs`: a clean ext4 on the new layer, through
//! commit (plain and ZFile) too. Needs e2fsprogs (mke2fs, e2fsck, debugfs); skips otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const VSIZE: u64 = 256 << 20;

fn tool(name: &str) -> Option<PathBuf> {
    ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `(e2fsck, debugfs)` when e2fsprogs is installed.
fn e2fsprogs() -> Option<(PathBuf, PathBuf)> {
    tool("mke2fs")?;
    Some((tool("e2fsck")?, tool("debugfs")?))
}

/// The device of `layers` (via `obd read`) as a raw image file `out`.
fn read_to_file(layers: &[&Path], out: &Path) -> Vec<u8> {
    let bytes = ok(bin("obd").arg("read").args(layers));
    assert_eq!(bytes.len() as u64, VSIZE);
    std::fs::write(out, &bytes).unwrap();
    bytes
}

/// e2fsck -fn is clean and debugfs reports the expected geometry (and label).
fn check_fs(img: &Path, label: Option<&str>) {
    let (e2fsck, debugfs) = e2fsprogs().unwrap();
    let out = Command::new(e2fsck).arg("-fn").arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(debugfs)
        .args(["-R", "stats"])
        .arg(img)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in debugfs stats:\n{stats}"))
    };
    assert_eq!(field("Block count:"), (VSIZE / 4096).to_string());
    assert_eq!(field("Block size:"), "4096");
    assert_eq!(field("Filesystem magic number:"), "0xEF53");
    if let Some(l) = label {
        assert_eq!(field("Filesystem volume name:"), l);
    }
    assert!(
        field("Filesystem features:").contains("has_journal"),
        "{stats}"
    );
}

fn mkfs_commit_roundtrip(sparse: bool, tool_name: &str) {
    if e2fsprogs().is_none() {
        eprintln!("SKIP: e2fsprogs (mke2fs, e2fsck, debugfs) not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let mut c = bin(tool_name);
    if tool_name == "obd" {
        c.arg("create");
    }
    if sparse {
        c.arg("-s");
    }
    ok(c.args([
        "--mkfs",
        "--fs-label",
        "base",
        "--vsize-bytes",
        &VSIZE.to_string(),
    ])
    .arg(p("l.data"))
    .arg(p("l.index"))
    .arg("1"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "l.data" && n != "l.index")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Only metadata was written: the layer stays small.
    let used = if sparse {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p("l.data")).unwrap().blocks() * 512
    } else {
        std::fs::metadata(p("l.data")).unwrap().len()
    };
    assert!(used < 32 << 20, "layer data uses {used} bytes");

    let raw = read_to_file(&[&p("l.data"), &p("l.index")], &p("rw.img"));
    check_fs(&p("rw.img"), Some("base"));

    // Commit, plain and compressed: same bytes, still clean.
    ok(bin("overlaybd-commit")
        .arg(p("l.data"))
        .arg(p("l.index"))
        .arg(p("l.commit")));
    ok(bin("overlaybd-commit")
        .arg("-z")
        .arg(p("l.data"))
        .arg(p("l.index"))
        .arg(p("l.zfile")));
    for (layer, img) in [("l.commit", "c.img"), ("l.zfile", "z.img")] {
        let bytes = read_to_file(&[&p(layer)], &p(img));
        assert!(bytes == raw, "{layer} differs from the writable layer");
        check_fs(&p(img), Some("base"));
    }
}

#[test]
fn overlaybd_create_mkfs_append() {
    mkfs_commit_roundtrip(false, "overlaybd-create");
}

#[test]
fn obd_create_mkfs_sparse() {
    mkfs_commit_roundtrip(true, "obd");
}

#[test]
fn mkfs_on_a_raw_image() {
    if e2fsprogs().is_none() {
        eprintln!("SKIP: e2fsprogs (mke2fs, e2fsck, debugfs) not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("raw.img");
    ok(bin("overlaybd-create")
        .args(["--raw", "--mkfs", "--vsize-bytes", &VSIZE.to_string()])
        .arg(&img)
        .arg(dir.path().join("unused"))
        .arg("1"));
    check_fs(&img, None);
}

#[test]
fn mkfs_failures_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("d"), dir.path().join("i"));
    // No mke2fs: a clear error naming the package.
    let e = fails(
        bin("overlaybd-create")
            .env("OBD_MKE2FS", dir.path().join("no-such-mke2fs"))
            .arg("--mkfs")
            .arg(&d)
            .arg(&i)
            .arg("1"),
    );
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("e2fsprogs"), "{msg}");
    assert!(!d.exists() && !i.exists());
    // A label ext4 cannot hold.
    let e = fails(
        bin("obd")
            .args(["create", "--mkfs", "--fs-label", "seventeen-chars-x"])
            .arg(&d)
            .arg(&i)
            .arg("1"),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("--fs-label"));
    assert!(!d.exists() && !i.exists());
    // mke2fs itself failing (here: not mke2fs at all) removes the new layer files.
    let e = fails(
        bin("overlaybd-create")
            .env("OBD_MKE2FS", "/bin/false")
            .args(["--mkfs", "--vsize-bytes", &VSIZE.to_string()])
            .arg(&d)
            .arg(&i)
            .arg("1"),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("--mkfs failed"));
    assert!(!d.exists() && !i.exists());
    // --fs-label needs --mkfs.
    fails(
        bin("overlaybd-create")
            .args(["--fs-label", "x"])
            .arg(&d)
            .arg(&i)
            .arg("1"),
    );
    assert!(!d.exists() && !i.exists());
}
