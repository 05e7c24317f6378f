//! Reading through the cache: conformance, fill units, restart, API basics, offline tools.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use obd_cache::{BlobCache, CacheOptions, clear_dir, gc_dir, scan_dir};
use obd_core::{ErrorKind, ReadAt};

#[test]
fn conformance_cold_and_warm() {
    for (size, refill, align) in [
        (1 << 20, 4096u32, 512u64),
        (3 * 65536 + 4096, 65536, 4096),
        (5 * 262_144 + 1000, 262_144, 8),
        (12_345, 8192, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(size, size as u64);
        let cache = open(dir.path(), 64 << 20, refill);
        let src = TestSource::new(data.clone());
        let blob = cache.blob(&fake_digest(1), src.clone()).unwrap();
        obd_core::testing::check_read_at(&*blob, &data, align, 7);
        obd_core::testing::check_concurrent_reads(&*blob, &data, align);
        // Warm: everything read is cached; read it all (fills the rest), then nothing is fetched.
        assert_eq!(blob.read_vec(0, size).unwrap(), data);
        let before = src.reads();
        obd_core::testing::check_read_at(&*blob, &data, align, 8);
        assert_eq!(src.reads(), before, "warm reads must not touch the source");
        assert!(blob.is_complete());
        assert_eq!(blob.cached_bytes(), size as u64);
    }
}

#[test]
fn fills_whole_aligned_units_and_only_missing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let refill = 65536u32;
    let size = 4 * 65536 + 5000;
    let data = random_bytes(size, 1);
    let cache = open(dir.path(), 64 << 20, refill);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(2), src.clone()).unwrap();
    // One byte in unit 1 fetches exactly unit 1.
    assert_eq!(blob.read_vec(65536 + 7, 1).unwrap(), &data[65543..65544]);
    assert_eq!(
        (
            src.reads(),
            src.bytes.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (1, 65536)
    );
    // The short last unit.
    assert_eq!(
        blob.read_vec(size as u64 - 1, 1).unwrap(),
        &data[size - 1..]
    );
    assert_eq!(
        src.bytes.load(std::sync::atomic::Ordering::SeqCst),
        65536 + 5000
    );
    // Units 0, 2, 3 missing: runs [0] and [2, 3] -> two source reads.
    assert_eq!(blob.read_vec(0, size).unwrap(), data);
    assert_eq!(src.reads(), 4);
    assert_eq!(
        src.bytes.load(std::sync::atomic::Ordering::SeqCst),
        size as u64
    );
    let mut buf = vec![0u8; 1000];
    assert!(blob.read_cached(&mut buf, 3 * 65536).unwrap());
    assert_eq!(buf, &data[3 * 65536..3 * 65536 + 1000]);
}

#[test]
fn source_reads_are_capped_at_32_mib() {
    let dir = tempfile::tempdir().unwrap();
    let size = 70 << 20;
    let data = random_bytes(size, 3);
    let cache = open(dir.path(), 1 << 30, 1 << 20);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(3), src.clone()).unwrap();
    assert!(blob.read_vec(0, size).unwrap() == data);
    assert_eq!(src.reads(), 3);
    assert_eq!(
        src.max_read.load(std::sync::atomic::Ordering::SeqCst),
        32 << 20
    );
    // A unit larger than 32 MiB is fetched in pieces.
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30, 64 << 20);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(3), src.clone()).unwrap();
    assert!(blob.read_vec(1, 10).unwrap() == data[1..11]);
    assert_eq!(src.reads(), 2);
    assert_eq!(
        src.max_read.load(std::sync::atomic::Ordering::SeqCst),
        32 << 20
    );
}

#[test]
fn bad_options_and_digests_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    for refill in [0u32, 1000, 2048, 4097, 300_000] {
        let e = BlobCache::open(CacheOptions {
            dir: dir.path().into(),
            capacity: 1 << 20,
            refill,
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{refill}: {e}");
    }
    let cache = open(dir.path(), 1 << 20, 4096);
    let src = TestSource::new(vec![1; 100]);
    for d in [
        "sha256:abc",
        "md5:00",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha256:{}", "0".repeat(63)),
    ] {
        let e = cache.blob(d, src.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{d}: {e}");
    }
}

#[test]
fn same_arc_while_held_and_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20, 4096);
    let src = TestSource::new(random_bytes(10_000, 4));
    let a = cache.blob(&fake_digest(5), src.clone()).unwrap();
    let b = cache.blob(&fake_digest(5), src.clone()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.digest(), fake_digest(5));
    let e = cache
        .blob(&fake_digest(5), TestSource::new(vec![0; 5]))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = a.read_vec(9_999, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    assert!(e.to_string().contains(&fake_digest(5)), "{e}");
    let mut b1 = [0u8; 2];
    assert_eq!(
        a.read_cached(&mut b1, 9_999).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert!(!a.read_cached(&mut b1, 0).unwrap());
}

#[test]
fn restart_keeps_cache_and_last_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 6);
    let d = fake_digest(6);
    let t0 = SystemTime::now();
    {
        let cache = open(dir.path(), 1 << 20, 65536);
        let blob = cache.blob(&d, TestSource::new(data.clone())).unwrap();
        assert_eq!(
            blob.read_vec(70_000, 100_000).unwrap(),
            &data[70_000..170_000]
        );
    }
    let cache = open(dir.path(), 1 << 20, 65536);
    let e = cache.list();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].digest.as_str(), e[0].size, e[0].cached_bytes),
        (d.as_str(), 300_000, 131_072)
    );
    assert!(!e[0].open && !e[0].complete);
    let age = t0.duration_since(e[0].last_used).unwrap_or_default();
    assert!(
        age < Duration::from_secs(2),
        "last_used {:?} vs {t0:?}",
        e[0].last_used
    );
    assert_eq!(cache.usage().used, 131_072);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    assert_eq!(
        blob.read_vec(65_536, 131_072).unwrap(),
        &data[65_536..196_608]
    );
    assert_eq!(
        src.reads(),
        0,
        "cached units were refetched after a restart"
    );
    assert!(cache.list()[0].open);
    // A blob cached with another refill size keeps its own unit size.
    drop(blob);
    drop(cache);
    let cache = open(dir.path(), 1 << 20, 4096);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&d, src.clone()).unwrap();
    assert_eq!(
        blob.read_vec(65_536, 131_072).unwrap(),
        &data[65_536..196_608]
    );
    assert_eq!(src.reads(), 0);
    assert_eq!(blob.read_vec(0, 10).unwrap(), &data[..10]);
    assert_eq!(src.bytes.load(std::sync::atomic::Ordering::SeqCst), 65536);
}

#[test]
fn directory_lock_and_offline_tools() {
    let dir = tempfile::tempdir().unwrap();
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(50_000 + i * 1000, 10 + i as u64))
        .collect();
    {
        let cache = open(dir.path(), 10 << 20, 4096);
        let e = BlobCache::open(CacheOptions::new(dir.path(), 1 << 20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert!(
            clear_dir(dir.path()).is_err(),
            "offline clear must refuse while the cache runs"
        );
        for (i, d) in datas.iter().enumerate() {
            let b = cache
                .blob(&fake_digest(20 + i as u32), TestSource::new(d.clone()))
                .unwrap();
            b.read_vec(0, d.len()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listing works while the cache runs.
        assert_eq!(scan_dir(dir.path()).unwrap().len(), 3);
        let u = cache.usage();
        assert_eq!(
            (u.used, u.blobs, u.capacity, u.refill),
            (153_000, 3, 10 << 20, 4096)
        );
        let json = serde_json::to_string(&cache.list()).unwrap();
        assert!(json.contains("cachedBytes"), "{json}");
    }
    let list = scan_dir(dir.path()).unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|e| e.complete && !e.open));
    // An orphan data file and a stray temporary.
    std::fs::write(
        dir.path()
            .join("sha256")
            .join(format!("{}.data", "e".repeat(64))),
        b"x",
    )
    .unwrap();
    std::fs::write(dir.path().join("sha256").join("junk.tmp"), b"x").unwrap();
    let r = gc_dir(dir.path(), 110_000).unwrap();
    assert_eq!((r.evicted_blobs, r.freed_bytes), (1, 50_000), "{r:?}");
    let left: Vec<String> = scan_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|e| e.digest)
        .collect();
    assert_eq!(
        left,
        vec![fake_digest(21), fake_digest(22)],
        "the least recently used goes first"
    );
    assert!(clear_dir(dir.path()).unwrap() >= 103_000);
    assert!(scan_dir(dir.path()).unwrap().is_empty());
    assert!(
        std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn lookups_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20, 4096);
    let d = fake_digest(30);
    let blob = cache
        .blob(&d, TestSource::new(random_bytes(8192, 30)))
        .unwrap();
    blob.read_vec(0, 100).unwrap();
    blob.read_vec(0, 100).unwrap();
    blob.read_vec(10, 100).unwrap();
    assert_eq!((hits(&d), misses(&d)), (2.0, 1.0));
    assert!(metric("obd_read_seconds_count{source=\"cache\"}") >= 2.0);
}

#[test]
fn empty_blob() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20, 4096);
    let blob = cache
        .blob(&fake_digest(31), TestSource::new(Vec::new()))
        .unwrap();
    assert_eq!(blob.size(), 0);
    assert!(blob.read_vec(0, 0).unwrap().is_empty());
    assert!(blob.is_complete());
    assert_eq!(
        blob.read_vec(0, 1).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
}
