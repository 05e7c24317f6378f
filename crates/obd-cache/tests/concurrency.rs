//! Single flight, failed fetches, the capacity bound under concurrency, and priority.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use obd_core::{ErrorKind, ReadAt, priority};
use rand::{Rng, SeedableRng};

#[test]
fn sixteen_readers_of_a_cold_unit_make_one_source_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 40);
    let cache = open(dir.path(), 8 << 20, 262_144);
    let src = TestSource::new(data.clone());
    src.set_delay(200);
    let blob = cache.blob(&fake_digest(40), src.clone()).unwrap();
    let barrier = Barrier::new(16);
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let (blob, barrier, data) = (&blob, &barrier, &data);
            s.spawn(move || {
                barrier.wait();
                let off = 300_000 + t * 1000;
                let got = blob.read_vec(off, 3000).unwrap();
                assert!(got == data[off as usize..off as usize + 3000]);
            });
        }
    });
    assert_eq!(src.reads(), 1);
    assert_eq!(blob.cached_bytes(), 262_144);
}

#[test]
fn a_failed_fetch_wakes_every_waiter_with_the_error_and_leaves_nothing_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(100_000, 41);
    let cache = open(dir.path(), 8 << 20, 65536);
    let src = TestSource::new(data.clone());
    src.set_delay(1000);
    src.set_fail(true);
    let blob = cache.blob(&fake_digest(41), src.clone()).unwrap();
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (blob, barrier) = (&blob, &barrier);
            s.spawn(move || {
                barrier.wait();
                let e = blob.read_vec(10, 100).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                assert!(e.to_string().contains("injected source failure"), "{e}");
            });
        }
    });
    assert_eq!(
        src.reads(),
        1,
        "waiters must share the failed fetch, not retry it"
    );
    assert_eq!(blob.cached_bytes(), 0);
    src.set_fail(false);
    src.set_delay(0);
    assert_eq!(blob.read_vec(10, 100).unwrap(), &data[10..110]);
    assert_eq!(src.reads(), 2);
}

#[test]
fn used_bytes_never_exceed_capacity_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, refill) = (256 * 1024u64, 16_384u32);
    let cache = open(dir.path(), cap, refill);
    let evictions_before = metric("obd_cache_evictions_total");
    let datas: Vec<Vec<u8>> = (0..12)
        .map(|i| random_bytes(100_000 + i * 9_000, 50 + i as u64))
        .collect();
    let blobs: Vec<_> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            cache
                .blob(&fake_digest(50 + i as u32), TestSource::new(d.clone()))
                .unwrap()
        })
        .collect();
    let stop = AtomicBool::new(false);
    let max_seen = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let u = cache.usage().used;
                max_seen.fetch_max(u, Ordering::SeqCst);
                assert!(
                    u <= cap + u64::from(refill),
                    "used {u} > capacity {cap} + refill"
                );
                std::hint::spin_loop();
            }
        });
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let (blobs, datas) = (&blobs, &datas);
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                    for _ in 0..300 {
                        let i = rng.random_range(0..blobs.len());
                        let len = datas[i].len();
                        let off = rng.random_range(0..len);
                        let n = rng.random_range(1..=(len - off).min(40_000));
                        let got = blobs[i].read_vec(off as u64, n).unwrap();
                        assert!(got == datas[i][off..off + n], "blob {i} at {off}+{n}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
    });
    let u = cache.usage();
    assert!(u.used <= cap);
    let sum: u64 = blobs.iter().map(|b| b.cached_bytes()).sum();
    assert_eq!(sum, u.used, "accounting drifted");
    assert!(max_seen.load(Ordering::SeqCst) > cap / 2);
    assert!(
        allocated(dir.path()) <= cap + u64::from(refill),
        "disk use {}",
        allocated(dir.path())
    );
    assert!(metric("obd_cache_evictions_total") > evictions_before);
    // Everything still reads right after the storm.
    for (b, d) in blobs.iter().zip(&datas) {
        assert!(b.read_vec(0, d.len()).unwrap() == *d);
    }
}

#[test]
fn background_reads_defer_to_demand_and_never_hold_a_slot_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200_000, 60);
    let cache = open(dir.path(), 8 << 20, 65536);
    let src = TestSource::new(data.clone());
    let blob = cache.blob(&fake_digest(60), src.clone()).unwrap();
    blob.read_vec(0, 10).unwrap(); // unit 0 cached
    let demand = priority::DemandGuard::new();
    std::thread::scope(|s| {
        let bg = s.spawn(|| {
            priority::background(|| {
                let t = Instant::now();
                assert_eq!(blob.read_vec(5, 10).unwrap(), &data[5..15]);
                let cached = t.elapsed();
                let t = Instant::now();
                assert_eq!(blob.read_vec(70_000, 10).unwrap(), &data[70_000..70_010]);
                (cached, t.elapsed())
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        // A demand read of the unit the background reader waits to fetch is not blocked.
        let t = Instant::now();
        assert_eq!(blob.read_vec(70_000, 10).unwrap(), &data[70_000..70_010]);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "demand read waited {:?}",
            t.elapsed()
        );
        let (cached, cold) = bg.join().unwrap();
        assert!(
            cached < Duration::from_millis(300),
            "cached background read waited {cached:?}"
        );
        assert!(
            cold >= Duration::from_millis(450),
            "cold background read did not defer: {cold:?}"
        );
    });
    drop(demand);
    assert_eq!(
        src.reads(),
        2,
        "the background reader used the unit the demand read fetched"
    );
    let _ = Arc::strong_count(&blob);
}
