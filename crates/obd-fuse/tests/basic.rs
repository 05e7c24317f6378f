//! The exported file through the real kernel FUSE: attributes, reads and writes compared with
//! the device, fsync, hole punching, refusals, unmount paths.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use common::{Counting, random_bytes, skip_reason, wait_until};
use obd_core::{BlockDevice, ErrorKind, FileDevice, MemDevice, ReadAt, ReadOnly};
use obd_fuse::{FuseExport, FuseOptions, clear_stale_mount, is_fuse_mounted};
use rustix::fs::FallocateFlags;

const MIB: usize = 1 << 20;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn attributes_and_mount_table() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let dev = Arc::new(MemDevice::from_vec(random_bytes(3 * MIB + 512, 1)));
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    assert_eq!(
        export.path(),
        dir.path().canonicalize().unwrap().join("disk.img")
    );
    let md = std::fs::metadata(&path).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 3 * MIB as u64 + 512);
    assert_eq!(md.permissions().mode() & 0o7777, 0o644);
    assert_eq!(md.uid(), 0);
    assert!(is_fuse_mounted(&path));
    assert!(!export.is_finished());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == export.path().to_str())
        .expect("export in /proc/self/mounts");
    assert!(line.starts_with("obd "), "{line}");
    assert!(line.contains(" fuse rw,"), "{line}");
    assert!(line.contains("allow_other"), "{line}");
    // statfs answers: the loop driver takes its discard granularity from it.
    let st = rustix::fs::statfs(&path).unwrap();
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_blocks, (3 * MIB as u64 + 512).div_ceil(4096));
    export.unmount().unwrap();
    assert!(!is_fuse_mounted(&path));
    // The file created to mount on is left behind, empty and private.
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!((md.len(), md.permissions().mode() & 0o777), (0, 0o600));
}

#[test]
fn reads_and_writes_reach_the_device() {
    skip_unless!(skip_reason());
    for direct_io in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let size = 4 * MIB + 1000; // not a multiple of the page size: short read at EOF
        let dev = Arc::new(MemDevice::from_vec(random_bytes(size, 2)));
        let opts = FuseOptions {
            direct_io,
            ..FuseOptions::default()
        };
        let export = FuseExport::mount(dev.clone(), &path, &opts).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut whole = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut whole).unwrap();
        assert!(
            whole == dev.to_vec(),
            "whole-file read differs (direct_io={direct_io})"
        );
        // Reads at the end: short, then EOF.
        let mut buf = vec![0u8; 8192];
        assert_eq!(f.read_at(&mut buf, size as u64 - 100).unwrap(), 100);
        assert_eq!(f.read_at(&mut buf, size as u64).unwrap(), 0);
        // Writes at odd offsets and lengths land exactly in the device.
        let mut model = dev.to_vec();
        for (i, (off, len)) in [
            (0usize, 1usize),
            (511, 2),
            (4095, 4097),
            (100_000, 65_536 + 3),
        ]
        .into_iter()
        .chain([(size - 7, 7), (MIB, 3 * MIB)])
        .enumerate()
        {
            let data = random_bytes(len, 100 + i as u64);
            f.write_all_at(&data, off as u64).unwrap();
            model[off..off + len].copy_from_slice(&data);
            assert!(
                dev.to_vec() == model,
                "write {len}@{off} (direct_io={direct_io})"
            );
        }
        let mut back = vec![0u8; size];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == model);
        drop(f);
        export.unmount().unwrap();
    }
}

#[test]
fn kernel_file_passes_the_block_device_conformance_suite() {
    skip_unless!(skip_reason());
    for direct_io in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let dev = Arc::new(MemDevice::from_vec(random_bytes(2 * MIB, 3)));
        let opts = FuseOptions {
            direct_io,
            ..FuseOptions::default()
        };
        let export = FuseExport::mount(dev.clone(), &path, &opts).unwrap();
        // The FUSE file, opened like any image file, behaves as the device does.
        let through = FileDevice::open_rw(&path).unwrap();
        obd_core::testing::check_block_device(&through, 1, 600, 11);
        obd_core::testing::check_read_at(&through, &dev.to_vec(), 1, 12);
        obd_core::testing::check_concurrent_reads(&through, &dev.to_vec(), 512);
        drop(through);
        export.unmount().unwrap();
    }
}

#[test]
fn fsync_and_close_flush_the_device() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let dev = Arc::new(Counting::new(vec![0; MIB]));
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"durable", 4096).unwrap();
    let before = dev.flushes();
    f.sync_all().unwrap();
    assert!(dev.flushes() > before, "fsync did not reach flush");
    let before = dev.flushes();
    f.sync_data().unwrap();
    assert!(dev.flushes() > before, "fdatasync did not reach flush");
    let before = dev.flushes();
    drop(f);
    assert!(dev.flushes() > before, "close did not reach flush");
    assert_eq!(dev.mem.read_vec(4096, 7).unwrap(), b"durable");
    let before = dev.flushes();
    export.unmount().unwrap();
    assert!(dev.flushes() > before, "unmount did not flush");
}

#[test]
fn punch_hole_and_zero_range_discard() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let size = 2 * MIB;
    let dev = Arc::new(Counting::new(vec![0xAB; size]));
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Read first so the page cache holds the old bytes: the kernel must drop them.
    let mut buf = vec![0u8; size];
    f.read_exact_at(&mut buf, 0).unwrap();
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&f, punch, 65536, 131072).unwrap();
    assert_eq!(dev.discards.lock().unwrap().as_slice(), &[(65536, 131072)]);
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..65536].iter().all(|&b| b == 0xAB));
    assert!(buf[65536..196608].iter().all(|&b| b == 0));
    assert!(buf[196608..].iter().all(|&b| b == 0xAB));
    // Unaligned: whole sectors discarded, partial ones zeroed by write.
    rustix::fs::fallocate(&f, punch, 300_001, 10_000).unwrap();
    let mut part = vec![1u8; 10_002];
    f.read_exact_at(&mut part, 300_000).unwrap();
    assert_eq!((part[0], part[10_001]), (0xAB, 0xAB));
    assert!(part[1..10_001].iter().all(|&b| b == 0));
    // ZERO_RANGE inside the file, and a KEEP_SIZE range running past the end is clamped.
    let zero = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&f, zero, size as u64 - 4096, 1 << 20).unwrap();
    assert_eq!(
        dev.discards.lock().unwrap().last(),
        Some(&(size as u64 - 4096, 4096))
    );
    assert!(
        dev.mem
            .read_vec(size as u64 - 4096, 4096)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size as u64);
    // Growing the file, or plain allocation, is refused.
    let e = rustix::fs::fallocate(&f, FallocateFlags::ZERO_RANGE, size as u64 - 10, 100);
    assert_eq!(e, Err(rustix::io::Errno::FBIG));
    let e = rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 4096);
    assert_eq!(e, Err(rustix::io::Errno::OPNOTSUPP));
    drop(f);
    export.unmount().unwrap();
}

#[test]
fn writes_past_the_end_and_resizing_fail() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let size = MIB as u64;
    let dev = Arc::new(MemDevice::from_vec(random_bytes(MIB, 4)));
    let original = dev.to_vec();
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let e = f.write_at(&[1; 10], size).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG, "{e}");
    let e = f.write_at(&[1; 10], size + 4096).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG, "{e}");
    assert!(
        dev.to_vec() == original,
        "a refused write changed the device"
    );
    // A write straddling the end: the page cache may split it, so the part inside the
    // device can be written first (a short write, reported as such); the rest fails.
    let e = f.write_all_at(&[1; 100], size - 50).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG, "{e}");
    let now = dev.to_vec();
    assert!(now[..MIB - 50] == original[..MIB - 50]);
    assert!(now[MIB - 50..] == original[MIB - 50..] || now[MIB - 50..].iter().all(|&b| b == 1));
    dev.write_at(&original[MIB - 50..], size - 50).unwrap();
    let e = f.set_len(size / 2).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM, "{e}");
    let e = f.set_len(size * 2).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM, "{e}");
    f.set_len(size).unwrap(); // no-op resize is allowed
    let e = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_err();
    assert_eq!(errno(&e), libc::EPERM, "{e}");
    // Times can be set (touch).
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    f.set_modified(t).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), t);
    // O_TRUNC would truncate: refused.
    let e = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap_err();
    assert_eq!(errno(&e), libc::EPERM, "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(dev.to_vec() == original);
    drop(f);
    export.unmount().unwrap();
}

#[test]
fn read_only_device_refuses_writes() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.img");
    let data = random_bytes(MIB, 5);
    let dev: Arc<dyn BlockDevice> = Arc::new(ReadOnly(MemDevice::from_vec(data.clone())));
    let export = FuseExport::mount(dev, &path, &FuseOptions::default()).unwrap();
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o444);
    let e = OpenOptions::new().write(true).open(&path).unwrap_err();
    assert!(
        [libc::EROFS, libc::EPERM, libc::EACCES].contains(&errno(&e)),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == export.path().to_str() && l.contains(" fuse ro,"))
    );
    export.unmount().unwrap();
}

#[test]
fn bad_mount_points_are_refused_clearly() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::zeroed(4096));
    let e = FuseExport::mount(dev.clone(), dir.path(), &FuseOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert!(e.to_string().contains(dir.path().to_str().unwrap()), "{e}");
    let missing = dir.path().join("no/such/dir/disk.img");
    let e = FuseExport::mount(dev.clone(), &missing, &FuseOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
    let bad = FuseOptions {
        fs_name: "a,b".into(),
        ..FuseOptions::default()
    };
    let e = FuseExport::mount(dev.clone(), &dir.path().join("x.img"), &bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Mounting twice on one file is refused; the first export is unaffected.
    let path = dir.path().join("disk.img");
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let e = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    export.unmount().unwrap();
}

#[test]
fn busy_file_blocks_unmount_and_keeps_the_mount() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let data = random_bytes(MIB, 6);
    let dev = Arc::new(MemDevice::from_vec(data.clone()));
    let mut export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let f = File::open(&path).unwrap();
    let e = export.try_unmount().unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert!(
        e.to_string().contains(export.path().to_str().unwrap()),
        "{e}"
    );
    assert!(is_fuse_mounted(&path) && !export.is_finished());
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 8192).unwrap();
    assert_eq!(buf, data[8192..12288]);
    drop(f);
    export.try_unmount().unwrap();
    assert!(export.is_finished() && !is_fuse_mounted(&path));
    drop(export);

    // The consuming variant keeps the mount serving after EBUSY, until unmounted from outside.
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    let abs = export.path().to_path_buf();
    let f = File::open(&path).unwrap();
    let e = export.unmount().unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert!(is_fuse_mounted(&path));
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..4096]);
    drop(f);
    rustix::mount::unmount(&abs, rustix::mount::UnmountFlags::empty()).unwrap();
    assert!(!is_fuse_mounted(&path));
    assert!(!clear_stale_mount(&path).unwrap());
}

#[test]
fn umount_from_outside_ends_the_session() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let dev = Arc::new(Counting::new(vec![7; MIB]));
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    common::run("umount", &[path.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(10), || export.is_finished()));
    assert!(!is_fuse_mounted(&path));
    let before = dev.flushes();
    export.unmount().unwrap();
    assert!(dev.flushes() > before);
    // Dropping an export unmounts it too.
    let export = FuseExport::mount(dev.clone(), &path, &FuseOptions::default()).unwrap();
    assert!(is_fuse_mounted(&path));
    drop(export);
    assert!(!is_fuse_mounted(&path));
}
