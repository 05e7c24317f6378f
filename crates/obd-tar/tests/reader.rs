//! `open_payload` over memory and files: payload windows, pass-through, and errors that name
//! the file and the offset.

mod common;

use std::fs;

use obd_core::testing::{check_concurrent_reads, check_read_at};
use obd_core::{ErrorKind, FileDevice, MemDevice, ReadAt};
use obd_tar::layout::{self, HEADER_LEN};
use obd_tar::{EntryMeta, open_payload, open_payload_entry};

use common::{payload, wrapped};

#[test]
fn payload_window_passes_the_conformance_suite() {
    let data = payload(256 * 1024, 3);
    let file = wrapped(&data, &EntryMeta::default());
    let p = open_payload(MemDevice::from_vec(file)).unwrap();
    assert_eq!(p.start(), HEADER_LEN);
    check_read_at(&p, &data, 1, 11);
    check_read_at(&p, &data, 512, 12);
    check_concurrent_reads(&p, &data, 512);
}

#[test]
fn plain_source_is_passed_through_whole() {
    let data = payload(10_000, 4);
    let (p, entry) = open_payload_entry(MemDevice::from_vec(data.clone())).unwrap();
    assert_eq!(entry, None);
    assert_eq!(p.start(), 0);
    check_read_at(&p, &data, 1, 13);
    for len in [0usize, 1, 511, 512, 1535] {
        let p = open_payload(MemDevice::from_vec(vec![7u8; len])).unwrap();
        assert_eq!(p.read_vec(0, len).unwrap(), vec![7u8; len]);
    }
}

#[test]
fn file_payload_names_the_file_and_keeps_the_file_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    let data = payload(70_000, 5);
    fs::write(&path, wrapped(&data, &EntryMeta::default())).unwrap();
    let p = open_payload(FileDevice::open(&path).unwrap()).unwrap();
    assert_eq!(p.path(), Some(path.as_path()));
    assert_eq!(p.file_region().map(|(_, off)| off), Some(HEADER_LEN));
    check_read_at(&p, &data, 1, 14);
    let e = p.read_vec(69_999, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange, "{e}");
}

#[test]
fn declared_size_beyond_the_file_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.tar");
    let data = payload(5000, 6);
    let file = wrapped(&data, &EntryMeta::default());
    // Cut inside the payload: the header still promises 5000 bytes.
    fs::write(&path, &file[..1536 + 4000]).unwrap();
    let e = open_payload(FileDevice::open(&path).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.path(), Some(path.as_path()), "{e}");
    assert_eq!(e.offset(), Some(1536), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cut.tar") && msg.contains("5000") && msg.contains("5536"),
        "{msg}"
    );

    // An absurd PAX size.
    let mut file = wrapped(&data, &EntryMeta::default());
    let rec = layout::pax_record("size", "99999999999999");
    file[512..1024].fill(0);
    file[512..512 + rec.len()].copy_from_slice(rec.as_bytes());
    let sum_fix = {
        let mut b = file[..512].to_vec();
        b[124..136].copy_from_slice(format!("{:011o} ", rec.len()).as_bytes());
        b[148..156].fill(b' ');
        let s: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{s:06o}\0 ").as_bytes());
        b
    };
    file[..512].copy_from_slice(&sum_fix);
    fs::write(&path, &file).unwrap();
    let e = open_payload(FileDevice::open(&path).unwrap()).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(1536)),
        "{e}"
    );
    assert_eq!(e.path(), Some(path.as_path()), "{e}");
}

#[test]
fn truncated_and_corrupt_headers_name_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tar");
    let file = wrapped(b"some payload", &EntryMeta::default());

    fs::write(&path, &file[..1200]).unwrap();
    let e = open_payload(FileDevice::open(&path).unwrap()).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(1024)),
        "{e}"
    );
    assert_eq!(e.path(), Some(path.as_path()));
    assert!(e.to_string().contains("truncated"), "{e}");

    let mut bad = file.clone();
    bad[1024 + 3] ^= 1;
    fs::write(&path, &bad).unwrap();
    let e = open_payload(FileDevice::open(&path).unwrap()).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Checksum, Some(1024)),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}: at offset 1024: ", path.display())),
        "{e}"
    );

    // Same answers from memory, just without a path.
    let e = open_payload(MemDevice::from_vec(bad)).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset(), e.path()),
        (ErrorKind::Checksum, Some(1024), None)
    );
}

#[test]
fn unfinished_placeholder_is_refused() {
    let mut file = vec![0u8; 4096];
    file[..13].copy_from_slice(b"overlaybd.pax");
    file[156] = b'x';
    file[1024..1037].copy_from_slice(b"overlaybd.new");
    file[1024 + 257..1024 + 265].copy_from_slice(b"xxtar\0xx");
    let e = open_payload(MemDevice::from_vec(file)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("unfinished"), "{e}");
}

#[test]
fn long_extended_headers_are_read_past_the_first_probe() {
    // A PAX header of ~10 KiB (a long path record) pushes the entry past the first 4 KiB.
    let long_path = "d/".repeat(5000) + "f";
    let rec = layout::pax_record("path", &long_path);
    let mut file = vec![0u8; 512];
    file[..4].copy_from_slice(b"pax0");
    file[124..136].copy_from_slice(format!("{:011o}\0", rec.len()).as_bytes());
    file[156] = b'x';
    file[257..265].copy_from_slice(b"ustar\x0000");
    let seal = |b: &mut [u8]| {
        b[148..156].fill(b' ');
        let s: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{s:06o}\0 ").as_bytes());
    };
    seal(&mut file[..512]);
    file.extend_from_slice(rec.as_bytes());
    file.resize(file.len().div_ceil(512) * 512, 0);
    let entry_at = file.len();
    let mut hdr = [0u8; 512];
    hdr[..5].copy_from_slice(b"short");
    hdr[124..136].copy_from_slice(b"00000000005\0");
    hdr[156] = b'0';
    hdr[257..265].copy_from_slice(b"ustar\x0000");
    seal(&mut hdr);
    file.extend_from_slice(&hdr);
    file.extend_from_slice(b"hello");
    file.resize(file.len() + 1024 + 507, 0);
    let (p, e) = open_payload_entry(MemDevice::from_vec(file)).unwrap();
    let e = e.unwrap();
    assert_eq!(e.data_offset, entry_at as u64 + 512);
    assert_eq!(e.name, long_path);
    assert_eq!(p.read_vec(0, 5).unwrap(), b"hello");
}
