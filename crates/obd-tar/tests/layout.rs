//! `layout::detect` on our own wrappers and on hand-corrupted ones.

mod common;

use obd_core::ErrorKind;
use obd_tar::EntryMeta;
use obd_tar::layout::{self, BLOCK, HEADER_LEN, TarEntry};

use common::{payload, wrapped};

/// Recompute the ustar checksum of the block at `off` after editing it.
fn reseal(file: &mut [u8], off: usize) {
    let block = &mut file[off..off + BLOCK];
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[test]
fn detects_our_wrapper() {
    let data = payload(1_000_003, 1);
    let file = wrapped(&data, &EntryMeta::default());
    assert_eq!(file.len() as u64, layout::wrapped_len(1_000_003).unwrap());
    let e = layout::detect(&file[..4096]).unwrap().unwrap();
    assert_eq!(
        e,
        TarEntry {
            data_offset: 1536,
            size: Some(1_000_003),
            name: "overlaybd.commit".into()
        }
    );
    assert_eq!(&file[1536..1536 + data.len()], &data[..]);
    // The trailer: padding to 512, then two zero blocks, and nothing else.
    let end = 1536 + data.len();
    assert_eq!(
        (file.len() - end - 1024) as u64,
        layout::padding_len(data.len() as u64)
    );
    assert!(file[end..].iter().all(|&b| b == 0));
    assert_eq!(file.len() % 512, 0);
}

#[test]
fn plain_files_are_not_tars() {
    assert_eq!(layout::detect(&[]).unwrap(), None);
    assert_eq!(layout::detect(&[0u8; 511]).unwrap(), None);
    assert_eq!(layout::detect(&[0u8; 4096]).unwrap(), None);
    // A ZFile header is not a tar.
    let mut zfile = vec![0u8; 4096];
    zfile[..8].copy_from_slice(b"ZFile\0\x01\0");
    assert_eq!(layout::detect(&zfile).unwrap(), None);
    // Magic with the wrong version is not a tar for upstream either.
    let mut file = wrapped(b"abc", &EntryMeta::default());
    file[263..265].copy_from_slice(b"01");
    assert_eq!(layout::detect(&file).unwrap(), None);
    // A ustar magic in a block shorter than 512 bytes is not looked at.
    let file = wrapped(b"abc", &EntryMeta::default());
    assert_eq!(layout::detect(&file[..511]).unwrap(), None);
}

#[test]
fn corrupt_checksum_is_an_error_at_the_header() {
    for off in [0usize, 1024] {
        let mut file = wrapped(b"payload", &EntryMeta::default());
        file[off + 50] ^= 0x20; // inside the name field
        let e = layout::detect(&file).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
        assert_eq!(e.offset(), Some(off as u64), "{e}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }
    let mut file = wrapped(b"payload", &EntryMeta::default());
    file[150] = b'9';
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Checksum, Some(0)),
        "{e}"
    );
}

#[test]
fn truncated_headers_are_errors_at_the_header() {
    let file = wrapped(b"payload", &EntryMeta::default());
    for (len, at) in [
        (512usize, 0u64),
        (515, 0),
        (700, 1024),
        (1024, 1024),
        (1300, 1024),
    ] {
        let e = layout::detect(&file[..len]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{len}: {e}");
        assert_eq!(e.offset(), Some(at), "{len}: {e}");
        assert!(e.to_string().contains("truncated"), "{e}");
    }
    // Enough for the headers: the payload itself is not detect's business.
    assert!(layout::detect(&file[..1536]).unwrap().is_some());
}

#[test]
fn bad_fields_are_errors_naming_their_offset() {
    // Unparseable size field in the PAX header.
    let mut file = wrapped(b"x", &EntryMeta::default());
    file[124..136].copy_from_slice(b"00000000z20 ");
    reseal(&mut file, 0);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(124)),
        "{e}"
    );

    // Garbage PAX record.
    let mut file = wrapped(b"x", &EntryMeta::default());
    file[512..521].copy_from_slice(b"9 size=x\n");
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(512)),
        "{e}"
    );
    file[512..521].copy_from_slice(b"99size=1\n");
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(512)),
        "{e}"
    );

    // An all-zero block where the entry should be.
    let mut file = wrapped(b"x", &EntryMeta::default());
    file[1024..1536].fill(0);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(1024)),
        "{e}"
    );

    // A directory entry cannot carry a payload.
    let mut file = wrapped(b"x", &EntryMeta::default());
    file[1024 + 156] = b'5';
    reseal(&mut file, 1024);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Unsupported, Some(1024 + 156)),
        "{e}"
    );

    // The header and the PAX record disagree on the size.
    let mut file = wrapped(b"xyz", &EntryMeta::default());
    file[1024 + 124..1024 + 136].copy_from_slice(b"00000000004\0");
    reseal(&mut file, 1024);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(1024 + 124)),
        "{e}"
    );
    // ...while agreeing is fine (GNU tar writes both).
    file[1024 + 124..1024 + 136].copy_from_slice(b"00000000003\0");
    reseal(&mut file, 1024);
    assert_eq!(layout::detect(&file).unwrap().unwrap().size, Some(3));

    // An extended header claiming more than is ever examined.
    let mut file = wrapped(b"x", &EntryMeta::default());
    file[124..136].copy_from_slice(b"77777777777 ");
    reseal(&mut file, 0);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Unsupported, Some(0)),
        "{e}"
    );
}

#[test]
fn a_huge_pax_size_is_reported_not_wrapped() {
    let mut file = wrapped(b"", &EntryMeta::default());
    let rec = layout::pax_record("size", &u64::MAX.to_string());
    file[512..1024].fill(0);
    file[512..512 + rec.len()].copy_from_slice(rec.as_bytes());
    file[124..136].copy_from_slice(format!("{:011o} ", rec.len()).as_bytes());
    reseal(&mut file, 0);
    let e = layout::detect(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(1024 + 124)),
        "{e}"
    );
}

#[test]
fn upstream_unfinished_placeholder_has_no_size() {
    // What upstream's mark_new_tar() leaves at the start of a file it is still writing.
    let mut file = vec![0u8; 1536 + 100];
    file[..13].copy_from_slice(b"overlaybd.pax");
    file[124..136].copy_from_slice(b"         11 ");
    file[156] = b'x';
    file[512..521].copy_from_slice(b"9 size=0\n");
    file[1024..1037].copy_from_slice(b"overlaybd.new");
    file[1024 + 124..1024 + 136].copy_from_slice(b"          0 ");
    file[1024 + 257..1024 + 265].copy_from_slice(b"xxtar\0xx");
    let e = layout::detect(&file).unwrap().unwrap();
    assert_eq!(
        e,
        TarEntry {
            data_offset: HEADER_LEN,
            size: None,
            name: "overlaybd.new".into()
        }
    );
}

#[test]
fn signed_checksums_are_accepted() {
    // Old tars summed signed chars; a name byte >= 0x80 makes the two sums differ.
    let mut file = wrapped(
        b"abc",
        &EntryMeta {
            name: "n\u{e9}".into(),
            ..Default::default()
        },
    );
    let block = &mut file[1024..1536];
    block[148..156].fill(b' ');
    let signed: i32 = block.iter().map(|&b| i32::from(b as i8)).sum();
    block[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    let e = layout::detect(&file).unwrap().unwrap();
    assert_eq!(e.name, "n\u{e9}");
}
