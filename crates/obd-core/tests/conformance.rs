//! The core devices pass the conformance suites they provide to everyone else.

use obd_core::testing::{check_block_device, check_concurrent_reads, check_read_at};
use obd_core::{BlockDevice, ErrorKind, FileDevice, MemDevice, ReadOnly, Slice};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
}

#[test]
fn mem_device() {
    let data = pattern(1 << 20);
    let dev = MemDevice::from_vec(data.clone());
    check_read_at(&dev, &data, 512, 1);
    check_concurrent_reads(&dev, &data, 512);
    check_block_device(&dev, 512, 500, 2);
}

#[test]
fn file_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let data = pattern(2 << 20);
    std::fs::write(&path, &data).unwrap();
    let ro = FileDevice::open(&path).unwrap();
    check_read_at(&ro, &data, 512, 3);
    check_concurrent_reads(&ro, &data, 512);
    assert!(ro.is_read_only());
    assert_eq!(
        ro.write_at(&[0; 512], 0).unwrap_err().kind(),
        ErrorKind::ReadOnly
    );

    let rw = FileDevice::open_rw(&path).unwrap();
    check_block_device(&rw, 4096, 300, 4);
}

#[test]
fn file_errors_name_the_file() {
    let e = FileDevice::open("/nonexistent/layer.commit").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("/nonexistent/layer.commit"), "{e}");
}

#[test]
fn slice_and_read_only() {
    let data = pattern(64 << 10);
    let dev = MemDevice::from_vec(data.clone());
    let s = Slice::new(&dev, 4096, 32 << 10).unwrap();
    check_read_at(&s, &data[4096..4096 + (32 << 10)], 512, 5);
    assert!(Slice::new(&dev, 60 << 10, 8 << 10).is_err());
    let ro = ReadOnly(s);
    check_read_at(&ro, &data[4096..4096 + (32 << 10)], 512, 6);
    assert_eq!(ro.discard(0, 512).unwrap_err().kind(), ErrorKind::ReadOnly);
}
