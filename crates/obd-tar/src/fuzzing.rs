//! The code the fuzz target `tar_wrapper` runs, shared with the corpus replay test so that
//! every corpus and crash file is also checked by `cargo test`. Not a stable API.

use obd_core::{MemDevice, ReadAt};

use crate::layout::{self, HEADER_LEN};
use crate::{EntryMeta, open_payload_entry};

/// Feed `data` to the tar wrapper reader and check its promises; panics on a broken promise.
///
/// 1. As a file: [`layout::detect`] on the bytes and [`open_payload_entry`] on a
///    [`MemDevice`] must agree, and a payload that opens must read back exactly the bytes at
///    the entry's offset (or the whole file when it is not a tar).
/// 2. As a payload: wrapping `data` and detecting the result must give it back unchanged.
pub fn fuzz_one(data: &[u8]) {
    check_as_file(data);
    check_round_trip(data);
}

fn check_as_file(data: &[u8]) {
    let detected = layout::detect(data);
    let opened = open_payload_entry(MemDevice::from_vec(data.to_vec()));
    match (detected, opened) {
        (Ok(None), Ok((payload, None))) => {
            let all = payload
                .read_vec(0, data.len())
                .expect("read the whole untarred file");
            assert_eq!(all, data, "a file that is not a tar must read as itself");
        }
        (Ok(Some(entry)), Ok((payload, Some(found)))) => {
            assert_eq!(
                entry, found,
                "detect and open_payload found different entries"
            );
            let size = entry.size.expect("an opened payload has a known size");
            let start = usize::try_from(entry.data_offset).expect("offset within the input");
            let end = start + usize::try_from(size).expect("size within the input");
            assert!(
                start >= layout::BLOCK && end <= data.len(),
                "payload outside the file"
            );
            let got = payload
                .read_vec(0, end - start)
                .expect("read the whole payload");
            assert_eq!(got, &data[start..end], "payload bytes differ from the file");
            assert!(
                payload.read_vec(size, 1).is_err(),
                "read past the payload must fail"
            );
        }
        (Ok(Some(entry)), Err(_)) => {
            // Only a size that does not fit the file, or the unfinished placeholder.
            let fits = entry.size.and_then(|s| entry.data_offset.checked_add(s));
            assert!(
                fits.is_none_or(|end| end > data.len() as u64),
                "open_payload refused an entry that fits: {entry:?}"
            );
        }
        (Err(d), Err(o)) => {
            assert_eq!(
                d.kind(),
                o.kind(),
                "detect and open_payload disagree: {d} / {o}"
            );
            assert_eq!(
                d.offset(),
                o.offset(),
                "detect and open_payload disagree: {d} / {o}"
            );
            assert!(
                d.offset().is_some(),
                "an error on bad input must name the offset: {d}"
            );
        }
        (d, o) => panic!(
            "detect and open_payload disagree: {d:?} / {:?}",
            o.map(|(_, e)| e)
        ),
    }
}

fn check_round_trip(data: &[u8]) {
    let meta = EntryMeta::default();
    let size = data.len() as u64;
    let mut file = layout::wrap_header(&meta.name, size, meta.mode, meta.mtime)
        .expect("default metadata is representable");
    file.extend_from_slice(data);
    file.extend_from_slice(&layout::trailer(size));
    assert_eq!(Some(file.len() as u64), layout::wrapped_len(size));
    let entry = layout::detect(&file)
        .expect("our own wrapper parses")
        .expect("is a tar");
    assert_eq!((entry.data_offset, entry.size), (HEADER_LEN, Some(size)));
    let payload = crate::open_payload(MemDevice::from_vec(file)).expect("our wrapper opens");
    assert_eq!(payload.read_vec(0, data.len()).expect("read payload"), data);
}
