//! Append-only layers: conformance, durability, recovery and argument checks.

mod rw_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_core::testing::{check_block_device, check_concurrent_reads, check_read_at};
use obd_core::{BlockDevice, ErrorKind, ReadAt};
use obd_lsmt::layout::{MAX_SEGMENT_SECTORS, Segment};
use obd_lsmt::rw::{GROUP_COMMIT_ENTRIES, WRITE_PIECE_SECTORS};
use obd_lsmt::{AppendLayer, CreateOptions};
use rw_common::*;

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("layer.data"), dir.join("layer.index"))
}

fn new_layer(dir: &Path, vsize: u64) -> AppendLayer {
    let (d, i) = paths(dir);
    AppendLayer::create(&d, &i, vsize, CreateOptions::default()).unwrap()
}

fn reopen(dir: &Path) -> AppendLayer {
    let (d, i) = paths(dir);
    AppendLayer::open(&d, &i).unwrap()
}

fn all(dev: &dyn ReadAt) -> Vec<u8> {
    dev.read_vec(0, dev.size() as usize).unwrap()
}

#[test]
fn conformance_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 8 << 20);
    assert!(all(&layer).iter().all(|&b| b == 0));
    check_block_device(&layer, 512, 400, 1);
    let content = all(&layer);
    check_read_at(&layer, &content, 512, 2);
    check_read_at(&layer, &content, 1, 3);
    check_concurrent_reads(&layer, &content, 512);
    drop(layer);
    let layer = reopen(dir.path());
    assert!(layer.warnings().is_empty());
    assert!(all(&layer) == content);
    // Keep going after reopen: appends continue at the end of the data file.
    check_block_device(&layer, 4096, 200, 4);
    let content = all(&layer);
    drop(layer);
    assert!(all(&reopen(dir.path())) == content);
}

#[test]
fn durable_after_flush_even_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 1 << 20);
    layer.write_at(&[1u8; 4096], 0).unwrap();
    layer.discard(0, 512).unwrap();
    layer.flush().unwrap();
    let flushed = all(&layer);
    layer.write_at(&[2u8; 8192], 8192).unwrap();
    // A crash: nothing after the flush is committed to the index.
    std::mem::forget(layer);
    let layer = reopen(dir.path());
    assert!(all(&layer) == flushed);
    // Appends after the crash land behind the orphaned payload and read back correctly.
    layer.write_at(&[3u8; 512], 512).unwrap();
    let mut want = flushed.clone();
    want[512..1024].fill(3);
    assert!(all(&layer) == want);
    drop(layer); // a clean drop commits pending entries
    assert!(all(&reopen(dir.path())) == want);
}

#[test]
fn group_commit_bounds_unflushed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 8 << 20);
    let n = GROUP_COMMIT_ENTRIES + 10;
    for k in 0..n {
        layer
            .write_at(&[(k % 251) as u8 + 1; 512], (k as u64 % 16384) * 512)
            .unwrap();
    }
    std::mem::forget(layer);
    let layer = reopen(dir.path());
    // The first group was committed on its own (data synced first); the rest was lost.
    assert_eq!(layer.segment_count(), GROUP_COMMIT_ENTRIES);
    let got = all(&layer);
    for k in 0..n {
        let want = if k < GROUP_COMMIT_ENTRIES {
            (k % 251) as u8 + 1
        } else {
            0
        };
        assert_eq!(got[k * 512], want, "sector {k}");
    }
}

#[test]
fn torn_index_tail_is_ignored_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = paths(dir.path());
    let layer = new_layer(dir.path(), 1 << 20);
    layer.write_at(&[7u8; 4096], 4096).unwrap();
    layer.close().unwrap();
    let whole = std::fs::metadata(&i).unwrap().len();
    let before = all(&reopen(dir.path()));
    // A crash in the middle of appending an entry leaves part of it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&i)
        .unwrap()
        .write_all(&[0xAB; 9])
        .unwrap();
    let ro = AppendLayer::open_read_only(&d, &i).unwrap();
    assert_eq!(ro.warnings().len(), 1, "{:?}", ro.warnings());
    assert!(ro.warnings()[0].contains("torn"));
    assert!(all(&ro) == before);
    assert_eq!(
        std::fs::metadata(&i).unwrap().len(),
        whole + 9,
        "read-only open must not cut"
    );
    let layer = AppendLayer::open(&d, &i).unwrap();
    assert_eq!(layer.warnings().len(), 1);
    assert_eq!(std::fs::metadata(&i).unwrap().len(), whole);
    layer.write_at(&[9u8; 512], 0).unwrap();
    layer.close().unwrap();
    let layer = reopen(dir.path());
    assert!(layer.warnings().is_empty());
    let got = all(&layer);
    assert!(got[..512].iter().all(|&b| b == 9) && got[4096..8192].iter().all(|&b| b == 7));
}

#[test]
fn entry_beyond_data_is_an_error_naming_index_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = paths(dir.path());
    let layer = new_layer(dir.path(), 1 << 20);
    layer.write_at(&[7u8; 4096], 0).unwrap();
    layer.close().unwrap();
    let entry = Segment {
        offset: 16,
        length: 8,
        moffset: 1000,
        zeroed: false,
        tag: 0,
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(&i).unwrap();
    f.write_all(&Segment::PADDING.encode()).unwrap();
    f.write_all(&entry.encode()).unwrap();
    drop(f);
    let e = AppendLayer::open(&d, &i).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.path(), Some(i.as_path()));
    assert_eq!(e.offset(), Some(4096 + 2 * 16), "{e}");
    assert!(e.to_string().contains("entry 2"), "{e}");
}

#[test]
fn padding_and_zero_length_entries_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, i) = paths(dir.path());
    let layer = new_layer(dir.path(), 1 << 20);
    layer.write_at(&[5u8; 1024], 1024).unwrap();
    layer.close().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&i).unwrap();
    for _ in 0..3 {
        f.write_all(&Segment::PADDING.encode()).unwrap();
    }
    f.write_all(
        &Segment {
            offset: 0,
            length: 0,
            moffset: 9999,
            ..Default::default()
        }
        .encode(),
    )
    .unwrap();
    drop(f);
    let layer = reopen(dir.path());
    assert_eq!(
        layer.segments(),
        vec![Segment {
            offset: 2,
            length: 2,
            moffset: 8,
            ..Default::default()
        }]
    );
}

#[test]
fn misaligned_and_out_of_range_io_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 1 << 20);
    for (len, off) in [(512, 100), (100, 0), (1000, 512)] {
        let e = layer.write_at(&vec![1u8; len], off).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "write {len} at {off}: {e}"
        );
    }
    for (len, off) in [(512, 1), (1, 0)] {
        assert_eq!(
            layer.discard(off, len).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert_eq!(
        layer.write_at(&[0u8; 512], 1 << 20).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        layer.discard((1 << 20) - 512, 1024).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    assert_eq!(
        layer.read_vec((1 << 20) - 512, 1024).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    // Nothing was written by the failed calls.
    assert_eq!(layer.segment_count(), 0);
    assert_eq!(
        std::fs::metadata(dir.path().join("layer.data"))
            .unwrap()
            .len(),
        4096
    );
    // Empty I/O is fine.
    layer.write_at(&[], 512).unwrap();
    layer.discard(512, 0).unwrap();
    assert_eq!(layer.segment_count(), 0);
}

#[test]
fn large_writes_and_discards_are_split() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 64 << 20);
    let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i / 512 % 253) as u8).collect();
    layer.write_at(&data, 1 << 20).unwrap();
    layer.discard(20 << 20, 20 << 20).unwrap();
    let segs = layer.segments();
    let w = WRITE_PIECE_SECTORS;
    let lens: Vec<u32> = segs.iter().map(|s| s.length).collect();
    assert_eq!(lens[..3], [w, w, 18432 - 2 * w]);
    assert!(
        segs[3..]
            .iter()
            .all(|s| s.zeroed && s.length <= MAX_SEGMENT_SECTORS)
    );
    assert_eq!(
        segs[3..].iter().map(|s| u64::from(s.length)).sum::<u64>(),
        40960
    );
    assert!(layer.read_vec(1 << 20, data.len()).unwrap() == data);
    layer.close().unwrap();
    let layer = reopen(dir.path());
    assert_eq!(layer.segments(), segs);
}

#[test]
fn wrong_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = paths(dir.path());
    new_layer(dir.path(), 1 << 20).close().unwrap();
    // Swapped files.
    assert_eq!(
        AppendLayer::open(&i, &d).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // A committed layer is not writable.
    let lsmt = fixture("b_commit/layers/l1.lsmt");
    let e = AppendLayer::open_read_only(&lsmt, &i).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.path(), Some(lsmt.as_path()));
    // Truncated header.
    let short = dir.path().join("short");
    std::fs::write(&short, [0u8; 100]).unwrap();
    let e = AppendLayer::open(&short, &i).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (ErrorKind::Corrupt, Some(short.as_path()))
    );
    // Regression (fuzz finding): the error also names where the file ends.
    assert_eq!(e.offset(), Some(100), "{e}");
    // Missing file.
    let e = AppendLayer::open(&dir.path().join("nope"), &i).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn writes_are_atomic_for_concurrent_readers() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Arc::new(new_layer(dir.path(), 1 << 20));
    const REGION: usize = 16384;
    std::thread::scope(|s| {
        for w in 0..2usize {
            let layer = &layer;
            s.spawn(move || {
                for v in 1..=60u8 {
                    for r in (w..64).step_by(2) {
                        layer
                            .write_at(&vec![v; REGION], (r * REGION) as u64)
                            .unwrap();
                    }
                }
            });
        }
        for t in 0..2usize {
            let layer = &layer;
            s.spawn(move || {
                for k in 0..3000usize {
                    let r = (k * 7 + t) % 64;
                    let got = layer.read_vec((r * REGION) as u64, REGION).unwrap();
                    assert!(got.iter().all(|&b| b == got[0]), "torn read of region {r}");
                }
            });
        }
    });
    assert!(all(layer.as_ref()).iter().all(|&b| b == 60));
}
