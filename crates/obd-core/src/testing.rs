//! Conformance suites that every [`ReadAt`] and [`BlockDevice`] implementation runs in its tests.
//!
//! Each check compares the implementation against a plain byte vector and panics with a
//! description of the first difference. Enable with the `testing` feature.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{BlockDevice, ErrorKind, ReadAt};

/// Check that `src` reads exactly `expected`: whole, at boundaries, at random `align`-ed
/// ranges, and that reads past the end fail with [`ErrorKind::OutOfRange`] instead of
/// returning short or made-up data.
pub fn check_read_at<R: ReadAt + ?Sized>(src: &R, expected: &[u8], align: u64, seed: u64) {
    let size = expected.len() as u64;
    assert_eq!(
        src.size(),
        size,
        "size() differs from the expected content length"
    );
    assert_eq!(
        size % align,
        0,
        "test content must be a multiple of the alignment"
    );
    let check = |off: u64, len: u64| {
        let mut buf = vec![0xA5u8; len as usize];
        src.read_exact_at(&mut buf, off)
            .unwrap_or_else(|e| panic!("read of {len} bytes at {off} failed: {e}"));
        let want = &expected[off as usize..(off + len) as usize];
        if buf != want {
            let i = buf.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "read of {len} at {off}: first difference at device offset {}",
                off + i as u64
            );
        }
    };
    check(0, 0);
    if size > 0 {
        check(0, size.min(8 << 20));
        check(size - align, align);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let units = size / align;
    for _ in 0..200 {
        if units == 0 {
            break;
        }
        let start = rng.random_range(0..units);
        let n = rng.random_range(0..=(units - start).min((256 << 10) / align));
        check(start * align, n * align);
    }
    // Reads past the end fail, never come back short.
    let mut buf = vec![0u8; align as usize];
    let e = src
        .read_exact_at(&mut buf, size)
        .expect_err("read at the end must fail");
    assert_eq!(e.kind(), ErrorKind::OutOfRange, "read past end: {e}");
    if size >= align {
        let mut buf = vec![0u8; 2 * align as usize];
        let e = src
            .read_exact_at(&mut buf, size - align)
            .expect_err("straddling read must fail");
        assert_eq!(e.kind(), ErrorKind::OutOfRange, "straddling read: {e}");
    }
    let e = src
        .read_exact_at(&mut buf, u64::MAX - 1)
        .expect_err("huge offset must fail");
    assert_eq!(e.kind(), ErrorKind::OutOfRange, "huge offset: {e}");
}

/// Run `ops` random writes, discards, flushes and reads (offsets and lengths multiples of
/// `align`) against `dev`, comparing every read with a model of its contents.
/// The device's current contents are taken as the starting point.
pub fn check_block_device<D: BlockDevice + ?Sized>(dev: &D, align: u64, ops: usize, seed: u64) {
    let size = dev.size();
    assert_eq!(
        size % align,
        0,
        "device size must be a multiple of the alignment"
    );
    let mut model = dev
        .read_vec(0, size as usize)
        .expect("initial read of the whole device");
    let units = size / align;
    let mut rng = StdRng::seed_from_u64(seed);
    let max_units = ((1u64 << 20) / align).max(1);
    for step in 0..ops {
        if units == 0 {
            break;
        }
        let start = rng.random_range(0..units);
        let n = rng.random_range(1..=(units - start).min(max_units));
        let (off, len) = (start * align, n * align);
        match rng.random_range(0..10) {
            0..=4 => {
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data[..]);
                dev.write_at(&data, off)
                    .unwrap_or_else(|e| panic!("step {step}: write {len} at {off}: {e}"));
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            5 => {
                dev.discard(off, len)
                    .unwrap_or_else(|e| panic!("step {step}: discard {len} at {off}: {e}"));
                model[off as usize..(off + len) as usize].fill(0);
            }
            6 => dev
                .flush()
                .unwrap_or_else(|e| panic!("step {step}: flush: {e}")),
            _ => {
                let got = dev
                    .read_vec(off, len as usize)
                    .unwrap_or_else(|e| panic!("step {step}: read {len} at {off}: {e}"));
                assert!(
                    got == model[off as usize..(off + len) as usize],
                    "step {step}: read {len} at {off} differs from the model"
                );
            }
        }
    }
    dev.flush().expect("final flush");
    let all = dev.read_vec(0, size as usize).expect("final read");
    assert!(all == model, "final contents differ from the model");
    let e = dev
        .write_at(&vec![0u8; align as usize], size)
        .expect_err("write past end must fail");
    assert!(
        matches!(e.kind(), ErrorKind::OutOfRange | ErrorKind::InvalidInput),
        "write past end: {e}"
    );
}

/// Read `src` from several threads at once and check every read against `expected`.
pub fn check_concurrent_reads<R: ReadAt + ?Sized>(src: &R, expected: &[u8], align: u64) {
    let size = expected.len() as u64;
    let units = size / align;
    if units == 0 {
        return;
    }
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(1000 + t);
                for _ in 0..100 {
                    let start = rng.random_range(0..units);
                    let n = rng.random_range(1..=(units - start).min(64));
                    let (off, len) = (start * align, n * align);
                    let got = src.read_vec(off, len as usize).expect("concurrent read");
                    assert!(got == expected[off as usize..(off + len) as usize]);
                }
            });
        }
    });
}

/// Run `fuzz` over every regular file in `dir` (a fuzz corpus or artifacts folder), in name
/// order, failing with the file's path if one panics. Returns how many files ran; a missing
/// folder runs none.
pub fn replay_fuzz_dir(dir: &std::path::Path, fuzz: impl Fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fuzz(&data)));
        assert!(run.is_ok(), "fuzz input {} fails", path.display());
    }
    paths.len()
}
