//! Many exports at once, and no thread left behind. Alone in its test binary, so that the
//! process's thread count is not disturbed by other tests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{random_bytes, skip_reason, thread_count, wait_until};
use obd_core::MemDevice;
use obd_fuse::{FuseExport, FuseOptions, is_fuse_mounted};

#[test]
fn sixteen_exports_at_once_leave_no_threads_or_mounts() {
    skip_unless!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let start = thread_count();
    for round in 0..2 {
        let mut exports = Vec::new();
        let mut data = Vec::new();
        for i in 0..16u64 {
            let bytes = random_bytes((1 << 20) + i as usize * 4096, i + 100 * round);
            let dev = Arc::new(MemDevice::from_vec(bytes.clone()));
            let path = dir.path().join(format!("disk{i}.img"));
            let opts = FuseOptions {
                threads: 1 + (i as usize % 3),
                ..FuseOptions::default()
            };
            exports.push(FuseExport::mount(dev, &path, &opts).unwrap());
            data.push(bytes);
        }
        assert!(
            thread_count() > start + 16,
            "each export runs its own threads"
        );
        // All readable at once, from several threads.
        std::thread::scope(|s| {
            for (e, d) in exports.iter().zip(&data) {
                s.spawn(move || assert!(std::fs::read(e.path()).unwrap() == *d));
            }
        });
        let paths: Vec<_> = exports.iter().map(|e| e.path().to_path_buf()).collect();
        if round == 0 {
            for e in exports {
                e.unmount().unwrap();
            }
        } else {
            drop(exports); // Drop unmounts too.
        }
        assert!(paths.iter().all(|p| !is_fuse_mounted(p)));
        assert!(
            wait_until(Duration::from_secs(5), || thread_count() == start),
            "threads leaked: {} at start, {} now",
            start,
            thread_count()
        );
    }

    // Dropping an export whose file a loop device still holds: the mount is detached at
    // once, the threads go on serving the loop device, and end when it lets go.
    if let Some(r) = common::skip_reason_with_tools(&["losetup"]) {
        eprintln!("SKIP (drop with a loop attached): {r}");
        return;
    }
    let bytes = random_bytes(1 << 20, 999);
    let dev = Arc::new(MemDevice::from_vec(bytes.clone()));
    let path = dir.path().join("looped.img");
    let export = FuseExport::mount(dev, &path, &FuseOptions::default()).unwrap();
    let mut lo = common::LoopGuard::attach(&path, true);
    drop(export);
    assert!(!is_fuse_mounted(&path), "drop left the mount in place");
    let mut buf = vec![0u8; 4096];
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(lo.dev())
        .unwrap();
    let mut aligned = vec![0u8; 8192];
    let off = aligned.as_ptr().align_offset(4096);
    f.read_exact_at(&mut aligned[off..off + 4096], 65536)
        .unwrap();
    buf.copy_from_slice(&aligned[off..off + 4096]);
    assert!(buf == bytes[65536..65536 + 4096], "loop read after drop");
    drop(f);
    assert!(thread_count() > start, "the detached export still serves");
    lo.detach();
    assert!(
        wait_until(Duration::from_secs(10), || thread_count() == start),
        "threads of a dropped export outlived its last user: {} at start, {} now",
        start,
        thread_count()
    );
}
