//! Sequential read throughput of a 256 MiB device through the FUSE file (printed, not
//! asserted: the numbers depend on the machine). Run with `--nocapture` to see them.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{random_bytes, skip_reason};
use obd_core::MemDevice;
use obd_fuse::{FuseExport, FuseOptions};

const SIZE: usize = 256 << 20;
const CHUNK: usize = 1 << 20;

/// Read the whole file in 1 MiB preads; returns the time spent in reads. Every chunk is
/// compared with the device's bytes (outside the timing).
fn read_all(f: &std::fs::File, expected: &[u8]) -> Duration {
    let mut buf = vec![0u8; CHUNK];
    let mut spent = Duration::ZERO;
    for off in (0..SIZE).step_by(CHUNK) {
        let t = Instant::now();
        f.read_exact_at(&mut buf, off as u64).unwrap();
        spent += t.elapsed();
        assert!(buf == expected[off..off + CHUNK], "bytes differ at {off}");
    }
    spent
}

fn mbps(d: Duration) -> f64 {
    SIZE as f64 / 1e6 / d.as_secs_f64()
}

#[test]
fn sequential_read_throughput_256mib() {
    skip_unless!(skip_reason());
    let data = random_bytes(SIZE, 1234);
    let dev = Arc::new(MemDevice::from_vec(data.clone()));
    for direct_io in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let opts = FuseOptions {
            direct_io,
            ..FuseOptions::default()
        };
        let export = FuseExport::mount(dev.clone(), &path, &opts).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let cold = read_all(&f, &data);
        let warm = read_all(&f, &data);
        // Drop the FUSE file's page cache and read again.
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let dropped = read_all(&f, &data);
        eprintln!(
            "FUSE sequential read, 256 MiB in 1 MiB preads, direct_io={direct_io}: \
             cold {:.0} MB/s, second pass {:.0} MB/s, after fadvise(DONTNEED) {:.0} MB/s",
            mbps(cold),
            mbps(warm),
            mbps(dropped)
        );
        drop(f);
        export.unmount().unwrap();
    }
}
