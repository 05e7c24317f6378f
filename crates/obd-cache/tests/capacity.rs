//! LRU eviction, gc, clear, small capacities.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use obd_core::ReadAt;
use rand::{Rng, SeedableRng};

#[test]
fn full_cache_evicts_the_least_recently_used_blob() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 300_000, 65536);
    let datas: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(131_072, 80 + i)).collect();
    let srcs: Vec<_> = datas.iter().map(|d| TestSource::new(d.clone())).collect();
    let blobs: Vec<_> = (0..4)
        .map(|i| {
            cache
                .blob(&fake_digest(80 + i as u32), srcs[i].clone())
                .unwrap()
        })
        .collect();
    blobs[0].read_vec(0, 131_072).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    blobs[1].read_vec(0, 131_072).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    blobs[0].read_vec(0, 10).unwrap(); // 0 is now more recent than 1
    std::thread::sleep(Duration::from_millis(5));
    let ev = metric("obd_cache_evicted_bytes_total");
    blobs[2].read_vec(0, 131_072).unwrap(); // needs room: 1 goes
    assert_eq!(blobs[1].cached_bytes(), 0);
    assert_eq!(blobs[0].cached_bytes(), 131_072);
    assert_eq!(blobs[2].cached_bytes(), 131_072);
    assert!(metric("obd_cache_evicted_bytes_total") >= ev + 131_072.0);
    // The evicted blob keeps working (refetches).
    assert!(blobs[1].read_vec(0, 131_072).unwrap() == datas[1]);
    assert!(cache.usage().used <= 300_000);
    assert_eq!(metric("obd_cache_capacity_bytes"), 300_000.0);
}

#[test]
fn the_only_blob_drops_its_own_oldest_units_and_tiny_capacity_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(10 * 65536, 85);
    let cache = open(dir.path(), 3 * 65536, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(85), src.clone()).unwrap();
    for u in 0..10u64 {
        assert!(blob.read_vec(u * 65536, 100).unwrap() == data[(u * 65536) as usize..][..100]);
    }
    assert_eq!(blob.cached_bytes(), 3 * 65536);
    let mut b = [0u8; 100];
    assert!(
        blob.read_cached(&mut b, 9 * 65536).unwrap(),
        "the newest units stay"
    );
    assert!(!blob.read_cached(&mut b, 0).unwrap(), "the oldest units go");
    // A read bigger than the capacity works.
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert!(cache.usage().used <= 3 * 65536);

    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 65535, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(86), src.clone()).unwrap();
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert!(blob.read_vec(0, data.len()).unwrap() == data);
    assert_eq!(src.reads(), 2);
    assert_eq!(cache.usage().used, 0);
    assert_eq!(allocated(dir.path()), 0);
}

#[test]
fn gc_frees_lru_first_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1_000_000, 16384);
    let datas: Vec<Vec<u8>> = (0..5).map(|i| random_bytes(150_000, 90 + i)).collect();
    let mut held = Vec::new();
    for (i, d) in datas.iter().enumerate() {
        let b = cache
            .blob(&fake_digest(90 + i as u32), TestSource::new(d.clone()))
            .unwrap();
        b.read_vec(0, d.len()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        if i == 1 {
            held.push(b); // stays open; still evictable
        }
    }
    let sub = dir.path().join("sha256");
    std::fs::write(sub.join(format!("{}.data", "d".repeat(64))), b"orphan").unwrap();
    std::fs::write(sub.join(format!("{}.meta", "c".repeat(64))), b"orphan").unwrap();
    std::fs::write(sub.join("x.meta.tmp"), b"tmp").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"user file").unwrap();
    // A side-loaded candidate is not an orphan.
    std::fs::write(
        dir.path().join(format!("sha256:{}", "b".repeat(64))),
        b"later",
    )
    .unwrap();
    assert_eq!(cache.usage().used, 750_000);
    let r = cache.gc(Some(400_000)).unwrap();
    assert_eq!(
        (r.evicted_blobs, r.freed_bytes, r.removed_orphans),
        (3, 450_000, 3),
        "{r:?}"
    );
    let cached: Vec<u64> = cache.list().iter().map(|e| e.cached_bytes).collect();
    assert_eq!(
        cached,
        vec![0, 150_000, 150_000],
        "blobs 0 and 2 gone, 1 open but empty, 3 and 4 kept"
    );
    assert!(held[0].read_vec(0, 150_000).unwrap() == datas[1]);
    assert!(dir.path().join("notes.txt").exists());
    assert!(
        dir.path()
            .join(format!("sha256:{}", "b".repeat(64)))
            .exists()
    );
    // Default target: 90 % of the capacity.
    let r = cache.gc(None).unwrap();
    assert_eq!(r.evicted_blobs, 0, "{r:?}");
    assert_eq!(cache.usage().used, 450_000);
}

#[test]
fn clear_while_four_threads_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 64 << 20, 65536);
    let datas: Vec<Vec<u8>> = (0..2).map(|i| random_bytes(1 << 20, 95 + i)).collect();
    let blobs: Vec<_> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            cache
                .blob(&fake_digest(95 + i as u32), TestSource::new(d.clone()))
                .unwrap()
        })
        .collect();
    // A closed blob too.
    let closed = random_bytes(100_000, 97);
    cache
        .blob(&fake_digest(97), TestSource::new(closed.clone()))
        .unwrap()
        .read_vec(0, 100_000)
        .unwrap();
    let (stop, reads) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (blobs, datas, stop, reads) = (&blobs, &datas, &stop, &reads);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                while !stop.load(Ordering::SeqCst) {
                    let i = rng.random_range(0..2);
                    let off = rng.random_range(0..datas[i].len());
                    let n = rng.random_range(1..=(datas[i].len() - off).min(200_000));
                    let got = blobs[i].read_vec(off as u64, n).unwrap();
                    assert!(got == datas[i][off..off + n]);
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        for _ in 0..5 {
            let r0 = reads.load(Ordering::SeqCst);
            while reads.load(Ordering::SeqCst) < r0 + 100 {
                std::thread::sleep(Duration::from_millis(2));
            }
            let freed = cache.clear().unwrap();
            assert!(freed > 0);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let listed: Vec<String> = cache.list().into_iter().map(|e| e.digest).collect();
    assert_eq!(
        listed,
        vec![fake_digest(95), fake_digest(96)],
        "closed blobs are gone"
    );
    let sum: u64 = blobs.iter().map(|b| b.cached_bytes()).sum();
    assert_eq!(cache.usage().used, sum);
    assert!(cache.clear().unwrap() == sum);
    assert_eq!(cache.usage().used, 0);
    assert_eq!(allocated(dir.path()), 0, "clear frees the space");
    for (b, d) in blobs.iter().zip(&datas) {
        assert!(b.read_vec(0, d.len()).unwrap() == *d);
    }
}

#[test]
fn reopening_with_a_smaller_capacity_evicts_down_to_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 1 << 20, 4096);
        for i in 0..4 {
            let d = random_bytes(100_000, 98 + i);
            cache
                .blob(&fake_digest(98 + i as u32), TestSource::new(d))
                .unwrap()
                .read_vec(0, 100_000)
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let cache = open(dir.path(), 250_000, 4096);
    assert!(cache.usage().used <= 250_000);
    let kept: Vec<String> = cache.list().into_iter().map(|e| e.digest).collect();
    assert_eq!(kept, vec![fake_digest(100), fake_digest(101)]);
}
