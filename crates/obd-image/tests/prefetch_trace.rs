//! The trace codec against bytes written by hand from the upstream struct layout, error
//! reporting on damaged files, and a property round trip.

use obd_core::ErrorKind;
use obd_image::prefetch::trace::{HEADER_SIZE, RECORD_SIZE, TRACE_MAGIC, has_magic};
use obd_image::prefetch::{TraceOp, TraceRecord, decode, encode};
use proptest::prelude::*;

/// A two-record trace, byte by byte (little-endian C structs with natural padding):
/// `R layer 0 count 4096 offset 0` and `R layer 2 count 65536 offset 1 MiB`.
/// The checksum 0xFBF5E6F6 was computed independently (bitwise raw CRC32C, seed 0, over
/// the 48 record bytes).
#[rustfmt::skip]
const GOLDEN: [u8; 72] = [
    // header: magic 0xC2EF1820, pad, data_size 48, checksum, pad
    0x20, 0x18, 0xEF, 0xC2,  0, 0, 0, 0,
    48, 0, 0, 0, 0, 0, 0, 0,
    0xF6, 0xE6, 0xF5, 0xFB,  0, 0, 0, 0,
    // record 1: 'R', pad[3], layer 0, count 4096, offset 0
    b'R', 0, 0, 0,  0, 0, 0, 0,
    0x00, 0x10, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0,
    // record 2: 'R', pad[3], layer 2, count 65536, offset 1048576
    b'R', 0, 0, 0,  2, 0, 0, 0,
    0x00, 0x00, 0x01, 0, 0, 0, 0, 0,
    0x00, 0x00, 0x10, 0, 0, 0, 0, 0,
];

fn golden_records() -> Vec<TraceRecord> {
    vec![
        TraceRecord::read(0, 0, 4096),
        TraceRecord {
            op: TraceOp::Read,
            layer_index: 2,
            count: 65536,
            offset: 1 << 20,
        },
    ]
}

/// Bitwise raw CRC32C (no inversion), independent of the code under test.
fn crc32c_bitwise(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn encode_matches_hand_written_golden() {
    assert_eq!(encode(&golden_records()), GOLDEN.to_vec());
    assert_eq!(crc32c_bitwise(0, &GOLDEN[24..]), 0xFBF5_E6F6);
    assert_eq!(TRACE_MAGIC, 0xC2EF_1820);
    assert!(has_magic(&GOLDEN));
}

#[test]
fn decode_golden() {
    assert_eq!(decode(&GOLDEN).unwrap(), golden_records());
}

#[test]
fn upstream_garbage_padding_is_checksummed_as_stored() {
    // Upstream never clears the padding of its records: the checksum covers whatever is there.
    let mut b = GOLDEN;
    b[25..28].copy_from_slice(&[0xDE, 0xAD, 0xBE]);
    // Header padding is not covered by the checksum at all.
    b[4..8].copy_from_slice(&[1, 2, 3, 4]);
    b[20..24].copy_from_slice(&[5, 6, 7, 8]);
    let crc = crc32c_bitwise(0, &b[24..]);
    assert_eq!(crc, 0x1CFB_7360);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(decode(&b).unwrap(), golden_records());
    // The same bytes with the zero-padding checksum are rejected.
    b[16..20].copy_from_slice(&0xFBF5_E6F6u32.to_le_bytes());
    assert_eq!(decode(&b).unwrap_err().kind(), ErrorKind::Checksum);
}

fn err_of(bytes: &[u8]) -> obd_core::Error {
    decode(bytes).unwrap_err()
}

/// Re-seal `b` with a correct checksum, so that a record-level check is reached.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32c_bitwise(0, &b[HEADER_SIZE..]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn damaged_files_name_the_offset() {
    let e = err_of(&GOLDEN[..10]);
    assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0)), "{e}");
    assert!(e.to_string().contains("shorter"), "{e}");

    let mut b = GOLDEN.to_vec();
    b[0] ^= 1;
    let e = err_of(&b);
    assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(0)), "{e}");
    assert!(e.to_string().contains("magic"), "{e}");

    let e = err_of(&GOLDEN[..71]);
    assert_eq!((e.kind(), e.offset()), (ErrorKind::Corrupt, Some(8)), "{e}");
    assert!(e.to_string().contains("48 bytes of records"), "{e}");

    let mut b = GOLDEN.to_vec();
    b[8] = 47;
    b.pop();
    let e = err_of(&b);
    assert!(e.to_string().contains("multiple"), "{e}");

    let mut b = GOLDEN.to_vec();
    b[40] ^= 0x80; // a count bit of record 1
    let e = err_of(&b);
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Checksum, Some(16)),
        "{e}"
    );

    let mut b = GOLDEN.to_vec();
    b[48] = b'X'; // op of record 2
    let e = err_of(&reseal(b));
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(48)),
        "{e}"
    );
    assert!(e.to_string().contains("unknown op"), "{e}");

    let mut b = GOLDEN.to_vec();
    b[71] = 0x80; // offset of record 2 becomes negative
    let e = err_of(&reseal(b));
    assert_eq!(
        (e.kind(), e.offset()),
        (ErrorKind::Corrupt, Some(48)),
        "{e}"
    );
    assert!(e.to_string().contains("negative offset"), "{e}");

    let mut b = GOLDEN.to_vec();
    b[70] = 0xFF; // offset near 2^63, plus 64 KiB overflows
    b[71] = 0x7F;
    b[64..70].fill(0xFF);
    let e = err_of(&reseal(b));
    assert_eq!(e.offset(), Some(48), "{e}");
}

#[test]
fn write_records_decode() {
    let recs = vec![TraceRecord {
        op: TraceOp::Write,
        layer_index: 7,
        count: 512,
        offset: 4096,
    }];
    let b = encode(&recs);
    assert_eq!(b[HEADER_SIZE], b'W');
    assert_eq!(b.len(), HEADER_SIZE + RECORD_SIZE);
    assert_eq!(decode(&b).unwrap(), recs);
}

fn any_record() -> impl Strategy<Value = TraceRecord> {
    (
        any::<bool>(),
        any::<u32>(),
        0..=i64::MAX as u64,
        0..=i64::MAX,
    )
        .prop_map(|(w, layer_index, count, offset)| {
            let count = count.min((i64::MAX - offset) as u64);
            TraceRecord {
                op: if w { TraceOp::Write } else { TraceOp::Read },
                layer_index,
                count,
                offset,
            }
        })
}

proptest! {
    #[test]
    fn round_trip(records in proptest::collection::vec(any_record(), 0..64)) {
        let bytes = encode(&records);
        prop_assert_eq!(bytes.len(), HEADER_SIZE + RECORD_SIZE * records.len());
        prop_assert_eq!(decode(&bytes).unwrap(), records);
    }

    #[test]
    fn any_single_byte_flip_is_detected(
        records in proptest::collection::vec(any_record(), 1..8),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = encode(&records);
        let i = pos.index(bytes.len());
        // Header padding is not checked (upstream may leave garbage there).
        prop_assume!(!(4..8).contains(&i) && !(20..24).contains(&i));
        bytes[i] ^= 1 << bit;
        prop_assert!(decode(&bytes).is_err());
    }
}
