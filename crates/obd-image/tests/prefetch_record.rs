//! Recording traces of real layer files: what is recorded, how it stops (finish, lock file
//! deletion, drop), and the files left behind.

mod prefetch_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use obd_core::{MemDevice, ReadAt};
use obd_image::prefetch::{MAX_RECORDS, TraceRecord, TraceRecorder, decode};
use prefetch_common::random_layer;

fn suffixed(p: &Path, s: &str) -> PathBuf {
    PathBuf::from(format!("{}{s}", p.display()))
}

/// An empty trace file (the "record" signal) in a fresh directory.
fn empty_trace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace");
    std::fs::write(&path, b"").unwrap();
    (dir, path)
}

fn read(layer: &dyn ReadAt, off: u64, len: usize) {
    layer.read_vec(off, len).unwrap();
}

#[test]
fn wrapped_layer_passes_read_at_conformance() {
    let (dir, path) = empty_trace();
    let (_, data, l0) = random_layer(dir.path(), "l0", 1 << 20, 1);
    let rec = TraceRecorder::start(&path).unwrap();
    let w = rec.wrap(0, l0);
    obd_core::testing::check_read_at(&*w, &data, 512, 7);
    obd_core::testing::check_concurrent_reads(&*w, &data, 512);
    assert!(!rec.is_empty());
    assert_eq!(w.path(), Some(dir.path().join("l0").as_path()));
    rec.finish().unwrap();
}

#[test]
fn finish_writes_the_reads_made() {
    let (dir, path) = empty_trace();
    let (_, _, l0) = random_layer(dir.path(), "l0", 1 << 20, 1);
    let (_, _, l1) = random_layer(dir.path(), "l1", 1 << 20, 2);
    let rec = TraceRecorder::start(&path).unwrap();
    assert!(suffixed(&path, ".lock").exists());
    assert!(!suffixed(&path, ".ok").exists());
    let w0 = rec.wrap(0, l0);
    let w1 = rec.wrap(1, l1);

    read(&*w0, 0, 4096);
    read(&*w0, 4096, 4096); // continues the previous read: merged
    read(&*w1, 1000, 10);
    read(&*w0, 512, 1024); // inside a recorded read: dropped
    read(&*w1, 1000, 10); // exact repeat: dropped
    read(&*w0, 100_000, 50);
    assert!(w0.read_vec((1 << 20) - 10, 20).is_err()); // failed: not recorded
    read(&*w1, 0, 0); // empty: not recorded
    let n = rec.finish().unwrap();
    let want = vec![
        TraceRecord::read(0, 0, 8192),
        TraceRecord::read(1, 1000, 10),
        TraceRecord::read(0, 100_000, 50),
    ];
    assert_eq!(n, want.len());
    assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), want);
    assert!(!suffixed(&path, ".lock").exists());
    assert!(suffixed(&path, ".ok").exists());
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");

    // finish is idempotent and later reads are not recorded.
    read(&*w0, 200_000, 10);
    assert_eq!(rec.finish().unwrap(), 3);
    assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), want);
    assert!(rec.is_stopped());
}

#[test]
fn merged_records_stay_replayable_by_upstream() {
    let (_dir, path) = empty_trace();
    let rec = TraceRecorder::start(&path).unwrap();
    let layer = rec.wrap(3, Arc::new(MemDevice::zeroed(4 << 20)));
    for i in 0..12u64 {
        read(&*layer, i * (256 << 10), 256 << 10);
    }
    rec.finish().unwrap();
    let got = decode(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        got,
        vec![
            TraceRecord::read(3, 0, 1 << 20),
            TraceRecord::read(3, 1 << 20, 1 << 20),
            TraceRecord::read(3, 2 << 20, 1 << 20),
        ]
    );
}

#[test]
fn deleting_the_lock_file_stops_recording_and_writes_ok() {
    let (dir, path) = empty_trace();
    let (_, _, l0) = random_layer(dir.path(), "l0", 64 << 10, 3);
    let rec = TraceRecorder::start(&path).unwrap();
    let w = rec.wrap(0, l0);
    read(&*w, 0, 100);
    read(&*w, 8192, 100);
    let t = Instant::now();
    std::fs::remove_file(suffixed(&path, ".lock")).unwrap();
    while !suffixed(&path, ".ok").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no .ok after deleting .lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rec.is_stopped());
    let want = vec![
        TraceRecord::read(0, 0, 100),
        TraceRecord::read(0, 8192, 100),
    ];
    assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), want);
    // Reads after the stop are not recorded, and a later finish (device close) keeps the file.
    read(&*w, 30000, 100);
    assert_eq!(rec.finish().unwrap(), 2);
    assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), want);
}

#[test]
fn dropping_the_last_reference_dumps_the_trace() {
    let (_dir, path) = empty_trace();
    let rec = TraceRecorder::start(&path).unwrap();
    let w = rec.wrap(5, Arc::new(MemDevice::zeroed(1 << 16)));
    drop(rec);
    read(&*w, 4096, 512);
    drop(w); // the wrapper held the last reference: like a device closing
    assert_eq!(
        decode(&std::fs::read(&path).unwrap()).unwrap(),
        vec![TraceRecord::read(5, 4096, 512)]
    );
    assert!(suffixed(&path, ".ok").exists());
    assert!(!suffixed(&path, ".lock").exists());
}

#[test]
fn stale_ok_file_is_removed_at_start() {
    let (_dir, path) = empty_trace();
    std::fs::write(suffixed(&path, ".ok"), b"").unwrap();
    let rec = TraceRecorder::start(&path).unwrap();
    assert!(!suffixed(&path, ".ok").exists());
    assert_eq!(rec.finish().unwrap(), 0);
    assert!(suffixed(&path, ".ok").exists());
    assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), vec![]);
}

#[test]
fn start_in_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/trace");
    let e = TraceRecorder::start(&path).unwrap_err();
    assert!(e.to_string().contains("no/such/trace.lock"), "{e}");
}

#[test]
fn memory_cap_stops_recording() {
    let (_dir, path) = empty_trace();
    let rec = TraceRecorder::start(&path).unwrap();
    let size = 2 * (MAX_RECORDS as u64 + 10);
    let w = rec.wrap(0, Arc::new(MemDevice::zeroed(size as usize)));
    let mut b = [0u8; 1];
    for i in 0..MAX_RECORDS as u64 + 10 {
        w.read_exact_at(&mut b, 2 * i).unwrap(); // gaps: nothing merges
    }
    assert!(rec.is_stopped());
    assert_eq!(rec.finish().unwrap(), MAX_RECORDS);
    let got = decode(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(got.len(), MAX_RECORDS);
    assert_eq!(
        got[MAX_RECORDS - 1],
        TraceRecord::read(0, 2 * (MAX_RECORDS as i64 - 1), 1)
    );
}
