//! Replaying traces against real layer files behind counting wrappers: exactly the recorded
//! ranges are read, in ≤ 1 MiB pieces, on background threads; bad records are skipped;
//! failures are counted; stop and drop are prompt.

mod prefetch_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use obd_core::{Error, ReadAt, Result};
use obd_image::prefetch::{TraceOp, TraceRecord, TraceRecorder, decode, replay};
use prefetch_common::{Counting, logs, merge, random_layer};

const MIB: u64 = 1 << 20;

#[test]
fn replays_exactly_the_recorded_ranges() {
    prefetch_common::capture();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 5 << 20, 1);
    let (_, _, f1) = random_layer(dir.path(), "l1", 1 << 20, 2);
    let (c0, c1) = (Counting::new(f0), Counting::new(f1));
    let layers: Vec<Arc<dyn ReadAt>> = vec![c0.clone(), c1.clone()];
    let records = vec![
        TraceRecord::read(0, 0, 4096),
        TraceRecord::read(0, 10_000, 3 * MIB + 5), // split into 4 reads
        TraceRecord::read(1, 512, 512),
        TraceRecord::read(7, 0, 4096), // no layer 7: skipped, one warning
        TraceRecord::read(9, 0, 4096),
        TraceRecord {
            op: TraceOp::Write,
            layer_index: 1,
            count: 4096,
            offset: 65536,
        }, // writes are not replayed
        TraceRecord::read(1, (MIB - 100) as i64, 1000), // clamped to the layer's end
        TraceRecord::read(1, 2 * MIB as i64, 10),       // beyond the end: skipped
    ];
    let h = replay(layers, records, 4);
    let stats = h.wait();
    assert!(stats.finished);
    assert_eq!(stats.reads_failed, 0);
    assert_eq!(stats.skipped, 4);
    assert_eq!(stats.reads_done, 1 + 4 + 1 + 1);
    assert_eq!(stats.bytes, 4096 + 3 * MIB + 5 + 512 + 100);

    assert_eq!(
        c0.covered(),
        merge(vec![(0, 4096), (10_000, 10_000 + 3 * MIB + 5)])
    );
    assert_eq!(c1.covered(), vec![(512, 1024), (MIB - 100, MIB)]);
    let all: Vec<_> = c0.seen().into_iter().chain(c1.seen()).collect();
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(all.iter().all(|s| s.len <= MIB && s.background), "{all:?}");
    // The byte total read equals the ranges: nothing read twice.
    assert_eq!(all.iter().map(|s| s.len).sum::<u64>(), stats.bytes);

    let warnings: Vec<_> = logs()
        .into_iter()
        .filter(|l| l.starts_with("WARN") && l.contains("layer index"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("7, 9"), "{warnings:?}");
}

#[test]
fn record_then_replay_reads_the_same_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    std::fs::write(&trace, b"").unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 2 << 20, 5);
    let rec = TraceRecorder::start(&trace).unwrap();
    let w = rec.wrap(0, f0.clone());
    let reads = [
        (0u64, 4096usize),
        (4096, 4096),
        (1 << 20, 65536),
        (70_000, 100),
    ];
    for (off, len) in reads {
        w.read_vec(off, len).unwrap();
    }
    rec.finish().unwrap();
    let records = decode(&std::fs::read(&trace).unwrap()).unwrap();

    let c = Counting::new(f0);
    let stats = replay(vec![c.clone()], records, 16).wait();
    assert_eq!(stats.reads_done, 3); // (0,4096)+(4096,4096) were merged into one record
    let want = merge(reads.iter().map(|&(o, l)| (o, o + l as u64)).collect());
    assert_eq!(c.covered(), want);
}

/// A layer that fails every read at or beyond `bad_from`.
struct FailsFrom {
    inner: Arc<dyn ReadAt>,
    bad_from: u64,
}

impl ReadAt for FailsFrom {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset >= self.bad_from {
            return Err(Error::new(obd_core::ErrorKind::Io, "injected failure").at_offset(offset));
        }
        self.inner.read_exact_at(buf, offset)
    }
}

#[test]
fn failed_reads_are_counted_and_logged_not_fatal() {
    prefetch_common::capture();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 1 << 20, 9);
    let bad: Arc<dyn ReadAt> = Arc::new(FailsFrom {
        inner: f0,
        bad_from: 600_000,
    });
    let records = vec![
        TraceRecord::read(0, 0, 4096),
        TraceRecord::read(0, 700_000, 4096),
        TraceRecord::read(0, 123_457, 4096),
        TraceRecord::read(0, 900_001, 4096),
    ];
    let stats = replay(vec![bad], records, 1).wait();
    assert_eq!((stats.reads_done, stats.reads_failed), (2, 2));
    assert_eq!(stats.bytes, 8192);
    let warned = logs()
        .into_iter()
        .filter(|l| l.contains("injected failure"))
        .collect::<Vec<_>>();
    assert!(
        warned
            .iter()
            .any(|l| l.contains("offset 700000 of layer 0")),
        "{warned:?}"
    );
}

fn slow_replay(concurrency: usize) -> (Arc<Counting>, obd_image::prefetch::ReplayHandle) {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, f0) = random_layer(dir.path(), "l0", 1 << 20, 11);
    let c = Counting::slow(f0, Duration::from_millis(20));
    let records: Vec<_> = (0..1000)
        .map(|i| TraceRecord::read(0, i * 1024, 512))
        .collect();
    (c.clone(), replay(vec![c], records, concurrency))
}

#[test]
fn stop_is_prompt() {
    let (c, h) = slow_replay(2);
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    h.stop();
    let stats = h.wait();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(stats.finished);
    assert!(stats.reads_done > 0 && stats.reads_done < 1000, "{stats:?}");
    let n = c.seen().len();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.seen().len(), n, "reads after stop");
}

#[test]
fn drop_stops_the_workers() {
    let (c, h) = slow_replay(4);
    std::thread::sleep(Duration::from_millis(100));
    let p = h.progress();
    assert!(!p.finished);
    let t = Instant::now();
    drop(h);
    assert!(t.elapsed() < Duration::from_secs(1));
    let n = c.seen().len();
    assert!(n < 1000);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.seen().len(), n, "reads after drop");
}

#[test]
fn concurrency_uses_several_workers() {
    let (c, h) = slow_replay(8);
    std::thread::sleep(Duration::from_millis(200));
    h.stop();
    let stats = h.wait();
    // 8 workers at 20 ms per read make far more progress than one could in 200 ms.
    assert!(stats.reads_done >= 20, "{stats:?}");
    assert_eq!(c.seen().len() as u64, stats.reads_done);
}

#[test]
fn empty_trace_finishes_at_once() {
    let h = replay(Vec::new(), Vec::new(), 16);
    let s = h.wait();
    assert!(s.finished);
    assert_eq!((s.bytes, s.reads_done, s.reads_failed), (0, 0, 0));
}
