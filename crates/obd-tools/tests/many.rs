//! 64 devices of one 64-layer image attached at once through FUSE: all readable, layers
//! shared, then all detached with no mount, loop device or thread left behind.

mod svc;

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use svc::*;

const MIB: u64 = 1 << 20;

#[test]
fn sixty_four_devices_of_a_sixty_four_layer_image() {
    if skip("sixty_four_devices", kernel_skip_reason()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let vsize = 64 * MIB;
    let mut lowers = Vec::new();
    let mut model = vec![0u8; (4 * MIB) as usize];
    for l in 0..64u64 {
        let off = (l * 61_440) % (3 * MIB);
        let bytes = pattern(l + 10, 64 * 1024);
        model[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        let path = p.join(format!("l{l:02}.commit"));
        committed_layer(p, &path, vsize, &[(off, bytes)]);
        lowers.push(path);
    }
    let mut d = Daemon::new(p);
    d.start();
    let baseline = d.threads();
    let mut files = Vec::new();
    for i in 0..64 {
        let cfg = p.join(format!("dev{i:02}.json"));
        device_config(&cfg, &lowers, None);
        let disk = p.join(format!("dev{i:02}.img"));
        d.attach(&cfg, "--fuse", &disk);
        files.push(disk);
    }
    assert_eq!(d.client().list().unwrap().len(), 64);
    for f in &files {
        let mut buf = vec![0u8; model.len()];
        fs::File::open(f)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert!(buf == model, "{} reads wrong bytes", f.display());
    }
    let rss_kib: u64 = fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!(
        "daemon with 64 devices of a 64-layer image: RSS {rss_kib} KiB, {} threads",
        d.threads()
    );
    // Regression guard: glibc's dynamic mmap threshold once made this 620 MiB.
    assert!(
        rss_kib <= 64 * 1024,
        "daemon RSS {rss_kib} KiB with 64 devices exceeds 64 MiB"
    );
    for f in &files {
        let out = d.obd("detach").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "detach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(d.client().list().unwrap().is_empty());
    assert!(
        mounts_under(p).is_empty(),
        "mounts left: {:?}",
        mounts_under(p)
    );
    assert!(loops_under(p).is_empty());
    // Idle runtime threads exit after 1 s; FUSE threads must all be gone.
    let t0 = Instant::now();
    while d.threads() > baseline && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.threads() <= baseline,
        "threads: {} now, {baseline} before",
        d.threads()
    );
}
