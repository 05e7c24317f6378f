//! `TarWriter` streaming and round trips over random payload sizes.

mod common;

use std::io::Write;

use obd_core::{ErrorKind, MemDevice, ReadAt};
use obd_tar::layout::{self, HEADER_LEN};
use obd_tar::{EntryMeta, TarWriter, open_payload, open_payload_entry};
use proptest::prelude::*;

use common::{payload, wrapped};

#[test]
fn streaming_writer_matches_the_layout_functions() {
    let data = payload(100_000, 7);
    let meta = EntryMeta::default();
    let mut w = TarWriter::new(Vec::new(), data.len() as u64, &meta).unwrap();
    for chunk in data.chunks(777) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.written(), 100_000);
    let out = w.finish().unwrap();
    assert_eq!(out, wrapped(&data, &meta));
}

#[test]
fn writer_refuses_more_or_less_than_declared() {
    let mut w = TarWriter::new(Vec::new(), 10, &EntryMeta::default()).unwrap();
    w.write_all(b"12345678").unwrap();
    let e = w.write_all(b"abc").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(w.written(), 8);
    let e = w.finish().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string().contains("8 bytes") && e.to_string().contains("10"),
        "{e}"
    );

    let bad = EntryMeta {
        name: String::new(),
        ..Default::default()
    };
    let e = TarWriter::new(Vec::new(), 1, &bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn entry_meta_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"x").unwrap();
    let md = std::fs::metadata(&p).unwrap();
    let m = EntryMeta::from_metadata(&md);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mode, md.mode());
    assert_eq!(m.mtime, md.mtime() as u64);
    assert_eq!(m.name, layout::ENTRY_NAME);
    // The header is representable.
    TarWriter::new(Vec::new(), 1, &m).unwrap();
}

#[test]
fn same_payload_same_bytes() {
    let data = payload(3333, 8);
    assert_eq!(
        wrapped(&data, &EntryMeta::default()),
        wrapped(&data, &EntryMeta::default())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_any_size(len in 0usize..20_000, seed: u64, mtime in 0u64..=layout::MAX_OCTAL_11,
                           mode in 0u32..=0o177_777) {
        let data = payload(len, seed);
        let meta = EntryMeta { name: "overlaybd.commit".into(), mode, mtime };
        let mut w = TarWriter::new(Vec::new(), len as u64, &meta).unwrap();
        w.write_all(&data).unwrap();
        let file = w.finish().unwrap();
        prop_assert_eq!(file.len() as u64, layout::wrapped_len(len as u64).unwrap());
        prop_assert_eq!(file.len() % 512, 0);
        let (p, e) = open_payload_entry(MemDevice::from_vec(file)).unwrap();
        let e = e.unwrap();
        prop_assert_eq!((e.data_offset, e.size), (HEADER_LEN, Some(len as u64)));
        prop_assert_eq!(p.size(), len as u64);
        prop_assert!(p.read_vec(0, len).unwrap() == data);
    }

    #[test]
    fn huge_declared_sizes_round_trip_through_detect(size in any::<u64>()) {
        // Headers for sizes far past anything we could write still describe the size.
        let h = layout::wrap_header("overlaybd.commit", size, 0o100644, 0).unwrap();
        let e = layout::detect(&h);
        if size <= u64::MAX - HEADER_LEN {
            prop_assert_eq!(e.unwrap().unwrap().size, Some(size));
        } else {
            prop_assert_eq!(e.unwrap_err().kind(), ErrorKind::Corrupt);
        }
        // And a source too short for it is refused, not read short.
        let mut file = h.clone();
        file.extend_from_slice(&[0u8; 100]);
        if size > 100 {
            prop_assert!(open_payload(MemDevice::from_vec(file)).is_err());
        }
    }
}
