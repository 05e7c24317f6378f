//! ext4 through mke2fs on a sparse temporary file, copied into a device.

use std::path::PathBuf;
use std::process::Command;

use obd_core::{BlockDevice, MemDevice, ReadAt};
use obd_image::mkfs::{MkfsOptions, find_mke2fs, mkfs_ext4};

fn tool(name: &str) -> Option<PathBuf> {
    ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn mkfs_on_a_memory_device_is_clean_ext4() {
    let (Some(_), Some(e2fsck), Some(debugfs)) = (find_mke2fs(), tool("e2fsck"), tool("debugfs"))
    else {
        eprintln!("SKIP: e2fsprogs (mke2fs, e2fsck, debugfs) not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let dev = MemDevice::zeroed(size as usize);
    let opts = MkfsOptions {
        label: Some("obdtest".into()),
        mke2fs: None,
    };
    let st = mkfs_ext4(&dev, dir.path(), &opts).unwrap();
    assert_eq!(st.fs_blocks, size / 4096);
    assert!(
        st.bytes_written > 0 && st.bytes_written < size / 4,
        "{st:?}"
    );
    assert_eq!(
        dev.read_vec(1024 + 56, 2).unwrap(),
        [0x53, 0xEF],
        "ext4 magic"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the temporary image is removed"
    );
    let img = dir.path().join("img");
    std::fs::write(&img, dev.to_vec()).unwrap();
    let out = Command::new(&e2fsck).arg("-fn").arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(&debugfs)
        .args(["-R", "stats"])
        .arg(&img)
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains(&format!("Block count:              {}", size / 4096)),
        "{stats}"
    );
    assert!(
        stats.contains("Filesystem volume name:   obdtest"),
        "{stats}"
    );
    assert!(stats.contains("Block size:               4096"), "{stats}");
}

#[test]
fn mkfs_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let dev = MemDevice::zeroed(64 << 20);
    let bad = MkfsOptions {
        label: None,
        mke2fs: Some("/nonexistent/mke2fs".into()),
    };
    let e = mkfs_ext4(&dev, dir.path(), &bad).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/mke2fs"), "{e}");
    let long = MkfsOptions {
        label: Some("a-label-longer-than-16".into()),
        mke2fs: None,
    };
    assert!(mkfs_ext4(&dev, dir.path(), &long).is_err());
    let tiny = MemDevice::zeroed(4096);
    assert!(mkfs_ext4(&tiny, dir.path(), &MkfsOptions::default()).is_err());
    assert!(
        dev.to_vec().iter().all(|&b| b == 0),
        "failed runs write nothing"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    dev.flush().unwrap();
}
