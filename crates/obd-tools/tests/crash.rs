//! kill -9 of the daemon during writes: after a restart (which re-attaches the device at the
//! same path) every write acknowledged by fsync is present, and an ext4 mount over a dead
//! daemon fails with EIO instead of hanging.
//!
//! Rounds: `OBD_CRASH_ROUNDS` (default 100); `bench/crash-soak.sh` runs many more.

mod svc;

use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svc::*;

const BLOCK: usize = 4096;
const BLOCKS: usize = 2048; // 8 MiB device

/// Per block: the acknowledged seed (0 = base content) and seeds written since then.
#[derive(Clone, Default)]
struct Block {
    acked: u64,
    pending: Vec<u64>,
}

fn content(seed: u64, base: &[u8], i: usize) -> Vec<u8> {
    if seed == 0 {
        base[i * BLOCK..(i + 1) * BLOCK].to_vec()
    } else {
        pattern(seed, BLOCK)
    }
}

#[test]
fn kill9_during_writes_loses_no_flushed_write() {
    if skip("kill9_during_writes", kernel_skip_reason()) {
        return;
    }
    let rounds: u64 = std::env::var("OBD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let vsize = (BLOCK * BLOCKS) as u64;
    let base_bytes = pattern(1, BLOCK * BLOCKS);
    let base = p.join("base.commit");
    committed_layer(p, &base, vsize, &[(0, base_bytes.clone())]);
    let data = p.join("up.data");
    let index = p.join("up.index");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_overlaybd-create"))
        .arg(&data)
        .arg(&index)
        .arg("1")
        .args(["--vsize-bytes", &vsize.to_string()])
        .output()
        .unwrap();
    assert!(st.status.success());
    let cfg = p.join("rw.json");
    device_config(&cfg, std::slice::from_ref(&base), Some((&data, &index)));
    let mut d = Daemon::new(p);
    d.start();
    let disk = p.join("disk.img");
    d.attach(&cfg, "--fuse", &disk);

    let model = Arc::new(Mutex::new(vec![Block::default(); BLOCKS]));
    let mut rng = pattern(99, 8 * rounds as usize + 8);
    let mut total_acked = 0u64;
    for round in 1..=rounds {
        // Writer: random blocks, an fsync every few writes, until the daemon dies.
        let m = model.clone();
        let path = disk.clone();
        let writer = std::thread::spawn(move || {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut acked = 0u64;
            let mut x = round.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
            for n in 0u64.. {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % BLOCKS as u64) as usize;
                let seed = round * 1_000_000 + n + 1;
                m.lock().unwrap()[i].pending.push(seed);
                if f.write_all_at(&pattern(seed, BLOCK), (i * BLOCK) as u64)
                    .is_err()
                {
                    return acked;
                }
                if n % 4 == 3 {
                    if f.sync_all().is_err() {
                        return acked;
                    }
                    // Everything written before the fsync is durable: the last write wins.
                    for b in m.lock().unwrap().iter_mut() {
                        if let Some(&last) = b.pending.last() {
                            b.acked = last;
                            b.pending.clear();
                            acked += 1;
                        }
                    }
                }
            }
            acked
        });
        let delay = u64::from(rng[round as usize]) % 60 + 5;
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        total_acked += writer.join().unwrap();
        d.start(); // restores the device at the same path
        let f = fs::File::open(&disk).unwrap();
        let mut dev = vec![0u8; BLOCK * BLOCKS];
        f.read_exact_at(&mut dev, 0).unwrap();
        let mut m = model.lock().unwrap();
        for (i, b) in m.iter_mut().enumerate() {
            let got = &dev[i * BLOCK..(i + 1) * BLOCK];
            let candidates = std::iter::once(b.acked).chain(b.pending.iter().copied());
            let hit = candidates
                .clone()
                .find(|s| content(*s, &base_bytes, i) == got);
            match hit {
                Some(s) => {
                    b.acked = s;
                    b.pending.clear();
                }
                None => panic!(
                    "round {round}: block {i} holds neither its acknowledged write (seed {}) nor a later one",
                    b.acked
                ),
            }
        }
        rng.rotate_left(1);
    }
    eprintln!("{rounds} kill -9 rounds, {total_acked} acknowledged block writes verified");
}

#[test]
fn ext4_over_a_killed_daemon_fails_with_eio_not_a_hang() {
    if skip("ext4_over_killed_daemon", kernel_skip_reason()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let vsize: u64 = 64 << 20;
    let raw = p.join("fs.raw");
    fs::File::create(&raw).unwrap().set_len(vsize).unwrap();
    let files = p.join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(files.join("a.bin"), pattern(5, 8 << 20)).unwrap();
    sh(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            files.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let base = p.join("base.commit");
    committed_layer(p, &base, vsize, &[(0, fs::read(&raw).unwrap())]);
    let cfg = p.join("ro.json");
    device_config(&cfg, std::slice::from_ref(&base), None);
    let mut d = Daemon::new(p);
    d.start();
    let disk = p.join("disk.img");
    d.attach(&cfg, "--fuse", &disk);
    let lo = losetup(&disk, true);
    let mnt = p.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    sh("mount", &["-o", "ro", &lo, mnt.to_str().unwrap()]);
    d.kill9();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    let target = mnt.join("a.bin");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&target).map(|v| v.len()));
    });
    let t0 = Instant::now();
    let res = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a read over a dead daemon hung");
    let err = res.expect_err("read over a dead daemon returned data");
    assert_eq!(
        err.raw_os_error(),
        Some(libc_eio()),
        "expected EIO, got {err}"
    );
    eprintln!("read failed with {err} after {:?}", t0.elapsed());
    cleanup_under(p);
    assert!(mounts_under(p).is_empty(), "{:?}", mounts_under(p));
    assert!(loops_under(p).is_empty());
}

fn libc_eio() -> i32 {
    5
}
