//! The writable stack device: an upper layer over committed lower layers.

mod rw_common;

use std::sync::Arc;

use obd_core::testing::{check_block_device, check_concurrent_reads, check_read_at};
use obd_core::{BlockDevice, FileDevice, MemDevice, ReadAt};
use obd_lsmt::{
    AppendLayer, CommitMeta, CreateOptions, LayerStack, LsmtLayer, SparseLayer, StackDevice,
    WritableLayer,
};
use rw_common::*;

fn lower_l1_l2() -> Arc<dyn ReadAt> {
    let open = |rel: &str| -> Arc<dyn ReadAt> { Arc::new(FileDevice::open(fixture(rel)).unwrap()) };
    let stack = LayerStack::open(vec![
        open("b_commit/layers/l1.lsmt"),
        open("b_commit/layers/l2.lsmt"),
    ])
    .unwrap();
    Arc::new(stack)
}

fn check_stack(upper: Arc<dyn WritableLayer>, seed: u64) {
    let lower = lower_l1_l2();
    let dev = StackDevice::new(Some(lower.clone()), upper.clone());
    assert_eq!(dev.size(), 64 << 20);
    assert_eq!(
        sha256_dev(&dev),
        expected("b_commit", "device_after_layer2")
    );
    let before = all(&dev);
    check_read_at(&dev, &before, 1, seed);
    check_block_device(&dev, 512, 300, seed + 1);
    let after = all(&dev);
    check_concurrent_reads(&dev, &after, 512);
    // The lower device is never written.
    assert_eq!(
        sha256_dev(lower.as_ref()),
        expected("b_commit", "device_after_layer2")
    );
    // Commit the upper, stack it on the lowers: the same device, read-only.
    let mut out = Vec::new();
    upper.commit(&mut out, &CommitMeta::default()).unwrap();
    let open = |rel: &str| -> Arc<dyn ReadAt> { Arc::new(FileDevice::open(fixture(rel)).unwrap()) };
    let stack = LayerStack::open(vec![
        open("b_commit/layers/l1.lsmt"),
        open("b_commit/layers/l2.lsmt"),
        Arc::new(MemDevice::from_vec(out)),
    ])
    .unwrap();
    check_read_at(&stack, &after, 512, seed + 2);
}

fn all(dev: &dyn ReadAt) -> Vec<u8> {
    dev.read_vec(0, dev.size() as usize).unwrap()
}

#[test]
fn append_upper_over_committed_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("u.data"), dir.path().join("u.index"));
    let upper = AppendLayer::create(&d, &i, 64 << 20, CreateOptions::default()).unwrap();
    check_stack(Arc::new(upper), 100);
}

#[test]
fn sparse_upper_over_committed_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("u.data"), dir.path().join("u.index"));
    let upper = SparseLayer::create(&d, &i, 64 << 20, CreateOptions::default()).unwrap();
    check_stack(Arc::new(upper), 200);
}

#[test]
fn upstream_layer1_as_upper_over_nothing_and_over_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = copy_fixture("b_commit/rw/l1.data", dir.path());
    let i = copy_fixture("b_commit/rw/l1.index", dir.path());
    let upper: Arc<dyn WritableLayer> = Arc::new(AppendLayer::open(&d, &i).unwrap());
    let alone = StackDevice::new(None, upper.clone());
    assert_eq!(
        sha256_dev(&alone),
        expected("b_commit", "device_after_layer1")
    );
    // Over its own committed form the device does not change.
    let l1: Arc<dyn ReadAt> = Arc::new(
        LsmtLayer::open(FileDevice::open(fixture("b_commit/layers/l1.lsmt")).unwrap()).unwrap(),
    );
    let dev = StackDevice::new(Some(l1), upper);
    assert_eq!(
        sha256_dev(&dev),
        expected("b_commit", "device_after_layer1")
    );
}

#[test]
fn lower_smaller_than_upper_reads_zeros_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("u.data"), dir.path().join("u.index"));
    let upper = Arc::new(AppendLayer::create(&d, &i, 2 << 20, CreateOptions::default()).unwrap());
    let lower: Arc<dyn ReadAt> = Arc::new(MemDevice::from_vec(vec![0x5Au8; (1 << 20) + 512]));
    let dev = StackDevice::new(Some(lower), upper.clone());
    let got = all(&dev);
    assert!(got[..(1 << 20) + 512].iter().all(|&b| b == 0x5A));
    assert!(got[(1 << 20) + 512..].iter().all(|&b| b == 0));
    dev.write_at(&[1u8; 1024], 1 << 20).unwrap();
    let got = dev.read_vec((1 << 20) - 512, 2048).unwrap();
    assert!(got[..512].iter().all(|&b| b == 0x5A));
    assert!(got[512..1536].iter().all(|&b| b == 1));
    assert!(got[1536..].iter().all(|&b| b == 0));
    check_block_device(&dev, 512, 100, 7);
    assert!(!dev.is_read_only());
    let ro = Arc::new(AppendLayer::open_read_only(&d, &i).unwrap());
    assert!(StackDevice::new(None, ro).is_read_only());
}
