//! Prefetch workers yield to demand reads. In its own test binary: demand guards are
//! process-wide, and would slow down the other prefetch tests.

mod prefetch_common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use obd_core::priority::DemandGuard;
use obd_image::prefetch::{DEMAND_YIELD_MAX, TraceRecord, replay};
use prefetch_common::{Counting, random_layer};

/// The tests below run one at a time: one test's demand guard would hold up another's workers.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn workers_wait_while_a_demand_read_is_in_flight() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 1 << 20, 3);
    let c = Counting::new(f0);
    let records: Vec<_> = (0..64)
        .map(|i| TraceRecord::read(0, i * 4096, 4096))
        .collect();

    let demand = DemandGuard::new();
    let h = replay(vec![c.clone()], records, 4);
    std::thread::sleep(DEMAND_YIELD_MAX / 3);
    assert_eq!(
        c.seen().len(),
        0,
        "background reads ran during a demand read"
    );
    assert_eq!(h.progress().reads_done, 0);

    let t = Instant::now();
    drop(demand);
    let stats = h.wait();
    assert_eq!(stats.reads_done, 64);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(c.seen().iter().all(|s| s.background));
}

#[test]
fn a_constant_demand_stream_delays_but_does_not_starve_prefetch() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 1 << 20, 4);
    let c = Counting::new(f0);
    let records: Vec<_> = (0..4)
        .map(|i| TraceRecord::read(0, i * 4096, 4096))
        .collect();
    let _demand = DemandGuard::new();
    let t = Instant::now();
    let stats = replay(vec![c.clone()], records, 4).wait();
    assert_eq!(stats.reads_done, 4);
    let took = t.elapsed();
    assert!(
        took >= DEMAND_YIELD_MAX - Duration::from_millis(50),
        "{took:?}"
    );
    assert!(took < DEMAND_YIELD_MAX * 4, "{took:?}");
}

#[test]
fn stop_is_prompt_while_yielding_to_demand() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 1 << 20, 5);
    let records: Vec<_> = (0..64)
        .map(|i| TraceRecord::read(0, i * 4096, 4096))
        .collect();
    let _demand = DemandGuard::new();
    let h = replay(vec![Counting::new(f0)], records, 4);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    h.stop();
    h.wait();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}
