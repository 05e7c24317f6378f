//! Sparse layers: conformance, the index rebuilt from file extents, hole punching, and the
//! upstream semantics of discards over lower layers.

mod rw_common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use obd_core::testing::{check_block_device, check_concurrent_reads, check_read_at};
use obd_core::{BlockDevice, ErrorKind, FileDevice, MemDevice, ReadAt};
use obd_lsmt::layout::Segment;
use obd_lsmt::{CommitMeta, CreateOptions, LsmtLayer, SparseLayer, StackDevice, open_writable};
use rw_common::*;

fn data_path(dir: &Path) -> PathBuf {
    dir.join("sparse.data")
}

fn new_layer(dir: &Path, vsize: u64) -> SparseLayer {
    let (d, i) = (data_path(dir), dir.join("sparse.index"));
    SparseLayer::create(
        &d,
        &i,
        vsize,
        CreateOptions {
            uuid: Some(UUID1.into()),
            parent_uuid: None,
        },
    )
    .unwrap()
}

fn all(dev: &dyn ReadAt) -> Vec<u8> {
    dev.read_vec(0, dev.size() as usize).unwrap()
}

fn seg(offset: u64, length: u32) -> Segment {
    Segment {
        offset,
        length,
        moffset: offset + 8,
        ..Default::default()
    }
}

#[test]
fn conformance_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 8 << 20);
    check_block_device(&layer, 512, 400, 11);
    let content = all(&layer);
    check_read_at(&layer, &content, 1, 12);
    check_concurrent_reads(&layer, &content, 512);
    drop(layer);
    let layer = SparseLayer::open(&data_path(dir.path())).unwrap();
    assert_eq!(layer.uuid(), UUID1);
    // Alone, holes and discarded ranges both read as zeros: nothing is lost.
    assert!(all(&layer) == content);
    check_block_device(&layer, 4096, 100, 13);
}

#[test]
fn index_is_rebuilt_from_extents() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 64 << 20);
    layer.write_at(&[1u8; 8192], 1 << 20).unwrap();
    layer.write_at(&vec![2u8; 10 << 20], 16 << 20).unwrap();
    layer.write_at(&[3u8; 4096], (64 << 20) - 4096).unwrap();
    layer.flush().unwrap();
    let content = all(&layer);
    drop(layer);
    let layer = SparseLayer::open(&data_path(dir.path())).unwrap();
    assert_eq!(
        layer.segments(),
        vec![
            seg(2048, 16),
            seg(32768, 16383),
            seg(32768 + 16383, 20480 - 16383),
            seg(131064, 8),
        ]
    );
    assert!(all(&layer) == content);
    let ro = SparseLayer::open_read_only(&data_path(dir.path())).unwrap();
    assert_eq!(ro.segments(), layer.segments());
    assert_eq!(
        ro.write_at(&[0; 512], 0).unwrap_err().kind(),
        ErrorKind::ReadOnly
    );
    let any = open_writable(&data_path(dir.path()), None).unwrap();
    assert!(any.is_sparse());
    assert!(all(any.as_ref()) == content);
}

#[test]
fn discard_punches_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 16 << 20);
    layer.write_at(&vec![9u8; 8 << 20], 0).unwrap();
    layer.flush().unwrap();
    let blocks = |p: &Path| std::fs::metadata(p).unwrap().blocks();
    let full = blocks(&data_path(dir.path()));
    layer.discard(1 << 20, 4 << 20).unwrap();
    assert!(
        blocks(&data_path(dir.path())) < full - 4096,
        "hole not punched"
    );
    let got = layer.read_vec(0, 8 << 20).unwrap();
    assert!(got[..1 << 20].iter().all(|&b| b == 9));
    assert!(got[1 << 20..5 << 20].iter().all(|&b| b == 0));
    assert!(got[5 << 20..].iter().all(|&b| b == 9));
    // In session the discard is a zeroed mapping.
    let z: Vec<_> = layer.segments().into_iter().filter(|s| s.zeroed).collect();
    assert_eq!(z.iter().map(|s| u64::from(s.length)).sum::<u64>(), 8192);
    drop(layer);
    let layer = SparseLayer::open(&data_path(dir.path())).unwrap();
    assert_eq!(layer.segments(), vec![seg(0, 2048), seg(10240, 6144)]);
}

/// Upstream semantics over a lower layer: a discard hides the lower data while the layer is
/// open; after reopening, the punched hole is indistinguishable from a never-written range
/// and the lower data shows through again.
#[test]
fn discard_over_lower_hides_it_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let lower: Arc<dyn ReadAt> = Arc::new(MemDevice::from_vec(vec![0x11u8; 1 << 20]));
    let upper = Arc::new(new_layer(dir.path(), 1 << 20));
    let dev = StackDevice::new(Some(lower.clone()), upper.clone());
    dev.write_at(&[0x22u8; 8192], 0).unwrap();
    dev.discard(4096, 8192).unwrap();
    let got = dev.read_vec(0, 16384).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 0x22));
    assert!(got[4096..12288].iter().all(|&b| b == 0));
    assert!(got[12288..].iter().all(|&b| b == 0x11));
    // Committing in session records the discard as a zeroed entry.
    let mut out = Vec::new();
    upper.commit(&mut out, &CommitMeta::default()).unwrap();
    let committed = LsmtLayer::open(MemDevice::from_vec(out)).unwrap();
    assert!(
        committed
            .segments()
            .iter()
            .any(|s| s.zeroed && s.offset == 8 && s.length == 16)
    );
    dev.flush().unwrap();
    drop((dev, upper));
    let upper = Arc::new(SparseLayer::open(&data_path(dir.path())).unwrap());
    let dev = StackDevice::new(Some(lower), upper);
    let got = dev.read_vec(0, 16384).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 0x22));
    assert!(
        got[4096..].iter().all(|&b| b == 0x11),
        "lower data shows through after reopen"
    );
}

#[test]
fn commit_reads_like_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let layer = new_layer(dir.path(), 4 << 20);
    check_block_device(&layer, 512, 200, 21);
    let content = all(&layer);
    let out_path = dir.path().join("c.lsmt");
    let out = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&out_path);
    let meta = CommitMeta {
        uuid: Some(UUID1.into()),
        ..Default::default()
    };
    layer.commit_to_file(&out.unwrap(), &meta).unwrap();
    let ro = LsmtLayer::open(FileDevice::open(&out_path).unwrap()).unwrap();
    assert_eq!(ro.vsize(), 4 << 20);
    assert_eq!(ro.uuid(), UUID1);
    check_read_at(&ro, &content, 512, 22);
}

#[test]
fn refuses_wrong_files() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("a.data"), dir.path().join("a.index"));
    obd_lsmt::AppendLayer::create(&d, &i, 1 << 20, CreateOptions::default()).unwrap();
    assert_eq!(
        SparseLayer::open(&d).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // An append-only layer through open_writable needs its index.
    assert_eq!(
        open_writable(&d, None).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(!open_writable(&d, Some(&i)).unwrap().is_sparse());
    // A sparse file longer than header + vsize (e.g. sealed by upstream) is refused.
    let layer = new_layer(dir.path(), 1 << 20);
    drop(layer);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data_path(dir.path()))
        .unwrap();
    f.set_len(4096 + (1 << 20) + 8192).unwrap();
    let e = SparseLayer::open(&data_path(dir.path())).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (ErrorKind::Corrupt, Some(data_path(dir.path()).as_path()))
    );
    // Misaligned I/O.
    let dir2 = tempfile::tempdir().unwrap();
    let layer = new_layer(dir2.path(), 1 << 20);
    assert_eq!(
        layer.write_at(&[0; 100], 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        layer.discard(3, 512).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        layer.write_at(&[0; 512], 1 << 20).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
}
