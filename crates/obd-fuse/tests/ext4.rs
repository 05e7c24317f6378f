//! The real thing: loop device on the exported file, ext4 on the loop device, files written,
//! everything torn down, and the same device exported afresh reads back the same files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{LoopGuard, MountGuard, random_bytes, run, skip_reason_with_tools};
use obd_core::{BlockDevice, FileDevice, ReadOnly};
use obd_fuse::{FuseExport, FuseOptions, is_fuse_mounted};

const MIB: u64 = 1 << 20;

/// The files written into the filesystem: relative path → content.
fn tree() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert(
        PathBuf::from("big.bin"),
        random_bytes(12 * MIB as usize + 333, 40),
    );
    t.insert(PathBuf::from("empty"), Vec::new());
    for d in 0..8 {
        for f in 0..40 {
            let len = (d * 40 + f) * 97 % 20_000;
            let p = PathBuf::from(format!("dir{d}/sub{}/file{f}.txt", f % 3));
            t.insert(p, random_bytes(len, (d * 1000 + f) as u64));
        }
    }
    t
}

fn write_tree(root: &Path, t: &BTreeMap<PathBuf, Vec<u8>>) {
    for (p, data) in t {
        let full = root.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, data).unwrap();
    }
}

fn check_tree(root: &Path, t: &BTreeMap<PathBuf, Vec<u8>>) {
    for (p, data) in t {
        let got = std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(&got == data, "{} differs after remount", p.display());
    }
}

#[test]
fn ext4_on_loop_on_the_export_survives_a_remount() {
    skip_unless!(skip_reason_with_tools(&[
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount"
    ]));
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.raw");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(160 * MIB)
        .unwrap();
    let dev = Arc::new(FileDevice::open_rw(&backing).unwrap());
    let path = dir.path().join("disk.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let t = tree();

    // Declared in this order so that failures clean up in reverse: ext4, loop, export.
    let mut export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let mut lo = LoopGuard::attach(&path, false);
    // mkfs on the loop device also discards it (BLKDISCARD -> punch hole -> dev.discard).
    run("mkfs.ext4", &["-q", "-F", "-L", "obdfuse", lo.dev()]);
    let mut fs = MountGuard::mount(lo.dev(), &mnt, "rw");
    write_tree(&mnt, &t);
    run("sync", &["-f", mnt.join("big.bin").to_str().unwrap()]);
    check_tree(&mnt, &t);
    fs.umount();

    // The loop device still holds the file: unmount fails, naming the file, and the export
    // stays mounted and usable.
    let e = export.try_unmount().unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert!(
        e.to_string().contains(export.path().to_str().unwrap()),
        "{e}"
    );
    assert!(is_fuse_mounted(&path) && !export.is_finished());
    run("e2fsck", &["-fn", lo.dev()]);
    lo.detach();
    export.unmount().unwrap();
    assert!(!is_fuse_mounted(&path));
    drop(lo);
    drop(fs);

    // A fresh export of the same device, read-only this time, through a read-only loop.
    let ro: Arc<dyn BlockDevice> = Arc::new(ReadOnly(dev.clone()));
    let export = FuseExport::mount(ro, &path, &FuseOptions::default()).unwrap();
    let mut lo = LoopGuard::attach(&path, true);
    run("e2fsck", &["-fn", lo.dev()]);
    let mut fs = MountGuard::mount(lo.dev(), &mnt, "ro");
    check_tree(&mnt, &t);
    let count = walk(&mnt);
    assert_eq!(count, t.len(), "unexpected number of files");
    fs.umount();
    lo.detach();
    export.unmount().unwrap();
}

#[test]
fn mkfs_directly_on_the_file_then_loop_with_direct_io() {
    skip_unless!(skip_reason_with_tools(&[
        "losetup", "mke2fs", "mount", "umount"
    ]));
    let dir = tempfile::tempdir().unwrap();
    let dev = Arc::new(obd_core::MemDevice::zeroed(64 * MIB as usize));
    let path = dir.path().join("disk.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = FuseOptions {
        direct_io: true,
        threads: 4,
        ..FuseOptions::default()
    };
    let export = FuseExport::mount(dev.clone(), &path, &opts).unwrap();
    run(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", path.to_str().unwrap()],
    );
    let mut lo = LoopGuard::attach(&path, false);
    let mut fs = MountGuard::mount(lo.dev(), &mnt, "rw");
    let data = random_bytes(5 * MIB as usize, 77);
    std::fs::write(mnt.join("f"), &data).unwrap();
    fs.umount();
    let mut fs = MountGuard::mount(lo.dev(), &mnt, "ro");
    assert!(std::fs::read(mnt.join("f")).unwrap() == data);
    fs.umount();
    lo.detach();
    export.unmount().unwrap();
    // The bytes are in the device: an ext4 superblock magic at 1024 + 56.
    assert_eq!(
        obd_core::ReadAt::read_vec(&*dev, 1024 + 56, 2).unwrap(),
        [0x53, 0xEF]
    );
}

fn walk(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if e.file_name() == "lost+found" {
            continue;
        }
        if ft.is_dir() {
            n += walk(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn lazy_umount_from_outside_while_a_loop_device_holds_the_file() {
    skip_unless!(skip_reason_with_tools(&["losetup", "umount"]));
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 * MIB as usize, 5);
    let dev = Arc::new(obd_core::MemDevice::from_vec(data.clone()));
    let path = dir.path().join("disk.img");
    let mut export = FuseExport::mount(dev, &path, &FuseOptions::default()).unwrap();
    let mut lo = LoopGuard::attach(&path, true);
    run("umount", &["-l", path.to_str().unwrap()]);
    assert!(!is_fuse_mounted(&path));
    // Detached from the tree but still serving the loop device: not finished, and
    // try_unmount says it is still in use.
    assert!(!export.is_finished());
    let e = export.try_unmount().unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    let got = std::fs::read(lo.dev()).unwrap();
    assert!(got == data, "loop device reads after umount -l");
    lo.detach();
    export.try_unmount().unwrap();
    assert!(export.is_finished());
}
