//! Self-healing: corrupted, truncated, deleted files and damaged meta never give wrong bytes.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use obd_cache::CachedBlob;
use obd_core::ReadAt;
use rand::{Rng, SeedableRng};

fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[test]
fn a_flipped_byte_is_healed_once_and_cached_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 70);
    let d = fake_digest(70);
    {
        let cache = open(dir.path(), 8 << 20, 65536);
        let blob = cache.blob(&d, TestSource::new(data.clone())).unwrap();
        blob.read_vec(0, data.len()).unwrap();
    }
    flip(&data_path(dir.path(), &d), 140_000);
    let cache = open(dir.path(), 8 << 20, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    let h0 = heals(&d);
    // A read elsewhere is served from the cache.
    assert_eq!(blob.read_vec(0, 4096).unwrap(), &data[..4096]);
    assert_eq!(src.reads(), 0);
    assert_eq!(
        blob.read_vec(139_000, 4000).unwrap(),
        &data[139_000..143_000]
    );
    assert_eq!(src.reads(), 1);
    assert_eq!(heals(&d), h0 + 1.0);
    assert_eq!(
        blob.read_vec(131_072, 65536).unwrap(),
        &data[131_072..196_608]
    );
    assert_eq!(src.reads(), 1, "the healed unit is cached again");
    assert!(blob.is_complete());
}

#[test]
fn lost_data_behind_present_records_is_refetched() {
    // A power cut can persist the meta record but not the data: zeros or a short file.
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(262_144, 71);
    let d = fake_digest(71);
    {
        let cache = open(dir.path(), 8 << 20, 65536);
        cache
            .blob(&d, TestSource::new(data.clone()))
            .unwrap()
            .read_vec(0, data.len())
            .unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data_path(dir.path(), &d))
        .unwrap();
    f.write_all_at(&vec![0u8; 65536], 65536).unwrap();
    f.set_len(196_608).unwrap();
    drop(f);
    let cache = open(dir.path(), 8 << 20, 65536);
    assert_eq!(
        cache.usage().used,
        196_608,
        "units past the end of the data file are not counted"
    );
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert_eq!(
        src.reads(),
        2,
        "unit 1 (zeros) and unit 3 (cut off) are refetched"
    );
    assert!(blob.is_complete());
}

#[test]
fn damaged_meta_files_are_discarded_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let datas: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(100_000, 72 + i)).collect();
    {
        let cache = open(dir.path(), 8 << 20, 16384);
        for (i, data) in datas.iter().enumerate() {
            let b = cache
                .blob(&fake_digest(72 + i as u32), TestSource::new(data.clone()))
                .unwrap();
            b.read_vec(0, data.len()).unwrap();
        }
    }
    // 0: header flipped; 1: garbage; 2: a record's CRC slot changed (record check fails).
    flip(&meta_path(dir.path(), &fake_digest(72)), 20);
    std::fs::write(
        meta_path(dir.path(), &fake_digest(73)),
        random_bytes(5000, 1),
    )
    .unwrap();
    flip(&meta_path(dir.path(), &fake_digest(74)), 96 + 8 + 5);
    let cache = open(dir.path(), 8 << 20, 16384);
    let listed: Vec<String> = cache.list().into_iter().map(|e| e.digest).collect();
    assert_eq!(
        listed,
        vec![fake_digest(74)],
        "damaged entries are dropped at start"
    );
    assert!(!data_path(dir.path(), &fake_digest(72)).exists());
    assert_eq!(cache.usage().used, 100_000 - 16384);
    for (i, data) in datas.iter().enumerate() {
        let src = TestSource::new(data.clone());
        let b = cache
            .blob(&fake_digest(72 + i as u32), src.clone())
            .unwrap();
        assert!(b.read_vec(0, data.len()).unwrap() == *data);
        // Discarded blobs: all 7 units in one run; the damaged record: unit 0 only.
        assert_eq!(src.reads(), 1, "blob {i}");
        assert!(b.is_complete());
    }
}

#[test]
fn invalidate_drops_units_and_the_next_read_refetches() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(4 * 65536, 75);
    let d = fake_digest(75);
    let cache = open(dir.path(), 8 << 20, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    blob.read_vec(0, data.len()).unwrap();
    assert_eq!(src.reads(), 1);
    blob.invalidate(65536 + 100, 65536); // units 1 and 2
    assert_eq!(blob.cached_bytes(), 2 * 65536);
    assert_eq!(cache.usage().used, 2 * 65536);
    let mut buf = vec![0u8; 10];
    assert!(!blob.read_cached(&mut buf, 65536).unwrap());
    assert!(blob.read_cached(&mut buf, 0).unwrap());
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert_eq!(src.reads(), 2);
    blob.invalidate_all();
    assert_eq!(blob.cached_bytes(), 0);
    blob.invalidate(1 << 40, 10); // out of range: nothing
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert_eq!(src.reads(), 3);
}

/// Read `blob` at random from 4 threads until `stop`; every read is checked.
fn readers<'a>(
    s: &'a std::thread::Scope<'a, '_>,
    blob: &'a CachedBlob,
    data: &'a [u8],
    stop: &'a AtomicBool,
    reads: &'a AtomicUsize,
) {
    for t in 0..4u64 {
        s.spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            while !stop.load(Ordering::SeqCst) {
                let off = rng.random_range(0..data.len());
                let n = rng.random_range(1..=(data.len() - off).min(100_000));
                let got = blob.read_vec(off as u64, n).unwrap();
                assert!(got == data[off..off + n], "wrong bytes at {off}+{n}");
                reads.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
}

fn wait_reads(reads: &AtomicUsize, more: usize) {
    let start = reads.load(Ordering::SeqCst);
    while reads.load(Ordering::SeqCst) < start + more {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn files_corrupted_truncated_and_deleted_under_readers() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 76);
    let d = fake_digest(76);
    let cache = open(dir.path(), 64 << 20, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    blob.read_vec(0, data.len()).unwrap();
    let (stop, reads) = (AtomicBool::new(false), AtomicUsize::new(0));
    let dp = data_path(dir.path(), &d);
    let mp = meta_path(dir.path(), &d);
    std::thread::scope(|s| {
        readers(s, &blob, &data, &stop, &reads);
        wait_reads(&reads, 50);

        // 1. Random byte flips.
        let h0 = heals(&d);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..40 {
            flip(&dp, rng.random_range(0..data.len() as u64));
        }
        wait_reads(&reads, 400);
        assert!(heals(&d) > h0, "flipped bytes were never detected");

        // 2. Truncation.
        blob.read_vec(0, data.len()).unwrap();
        let h1 = heals(&d);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&dp)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        wait_reads(&reads, 400);
        assert!(heals(&d) > h1, "truncation was never detected");

        // 3. Deletion of both files.
        blob.read_vec(0, data.len()).unwrap();
        let old_ino = std::fs::metadata(&dp).unwrap().ino();
        std::fs::remove_file(&dp).unwrap();
        std::fs::remove_file(&mp).unwrap();
        let t = std::time::Instant::now();
        while !(dp.exists() && mp.exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "deleted files were never recreated"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_ne!(std::fs::metadata(&dp).unwrap().ino(), old_ino);
        wait_reads(&reads, 200);
        stop.store(true, Ordering::SeqCst);
    });
    // The new files hold verified data again, and accounting matches.
    assert!(blob.cached_bytes() > 0);
    assert_eq!(cache.usage().used, blob.cached_bytes());
    assert!(std::fs::metadata(&dp).unwrap().blocks() * 512 >= blob.cached_bytes() / 2);
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
}

#[test]
fn a_disk_that_loses_writes_is_detected_and_bytes_are_served_from_memory() {
    // The data file is /dev/null: writes vanish, reads hit end of file.
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200_000, 77);
    let d = fake_digest(77);
    let cache = open(dir.path(), 8 << 20, 65536);
    std::os::unix::fs::symlink("/dev/null", data_path(dir.path(), &d)).unwrap();
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    let (h0, e0) = (heals(&d), metric("obd_errors_total{kind=\"cache_io\"}"));
    assert_eq!(blob.read_vec(100, 1000).unwrap(), &data[100..1100]);
    assert_eq!(blob.cached_bytes(), 65536, "the first write looks fine");
    // The cached unit reads back short: dropped, refetched, written, read back wrong.
    assert_eq!(blob.read_vec(100, 1000).unwrap(), &data[100..1100]);
    assert_eq!(heals(&d), h0 + 1.0);
    assert!(metric("obd_errors_total{kind=\"cache_io\"}") > e0);
    assert_eq!(blob.cached_bytes(), 0);
    assert_eq!(cache.usage().used, 0);
    // Writes are paused now: later reads fetch and serve, without new heals.
    for _ in 0..3 {
        assert!(blob.read_vec(0, data.len()).unwrap() == data);
    }
    assert_eq!(heals(&d), h0 + 1.0);
    assert_eq!(src.reads(), 5);
}
