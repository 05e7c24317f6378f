//! The code the fuzz target `zfile` runs, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`) so that every corpus and crash file is also checked by
//! `cargo test`. Not a stable API.

use obd_core::{ErrorKind, MemDevice, ReadAt};

use crate::layout::{HEADER_SIZE, ZFileHeader, block_crc};
use crate::{Algorithm, ZFileOptions, ZFileReader, compress_to_vec};

/// Most uncompressed bytes one input reads through the opened file (all reads together stay
/// within a small multiple of this).
const READ_CAP: u64 = 4 << 20;
/// Largest input also compressed and read back by the round trip check.
const ROUND_TRIP_MAX: usize = 64 << 10;

/// Feed `data` to the ZFile codecs and reader and check their promises; panics on a broken
/// promise.
///
/// 1. Header codec: the first and last 512 bytes decode, or fail cleanly; what decodes
///    re-encodes to a structure that decodes to the same fields.
/// 2. As a file: [`ZFileReader::open`] on a [`MemDevice`] either fails with an error naming
///    the byte offset, or gives a jump table that matches the stored index, reads that agree
///    with each other (whole windows, odd offsets, past the end), and a [`verify_all`] result
///    that matches the CRCs computed here.
/// 3. As content: `data` compressed by our writer (options from its first byte) reads back
///    unchanged.
///
/// [`verify_all`]: ZFileReader::verify_all
pub fn fuzz_one(data: &[u8]) {
    check_header_codec(data);
    if let Some(tail) = data.len().checked_sub(HEADER_SIZE) {
        check_header_codec(&data[tail..]);
    }
    check_as_file(data);
    if data.len() <= ROUND_TRIP_MAX {
        check_round_trip(data);
    }
}

fn check_header_codec(bytes: &[u8]) {
    let Ok(h) = ZFileHeader::decode(bytes) else {
        return;
    };
    assert!(bytes.len() >= HEADER_SIZE, "decoded a short header");
    let enc = h.encode();
    let back = ZFileHeader::decode(&enc).expect("an encoded header decodes");
    let want = if h.has_digest() {
        ZFileHeader {
            digest: crate::layout::header_digest(&enc),
            ..h
        }
    } else {
        h
    };
    assert_eq!(back, want, "header fields change through encode/decode");
    assert_eq!(back.encode(), enc, "encode is not stable");
}

fn check_as_file(data: &[u8]) {
    let reader = match ZFileReader::open(MemDevice::from_vec(data.to_vec())) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.offset().is_some(),
                "an open error on bad input must name the offset: {e}"
            );
            return;
        }
    };
    let meta = *reader.header();
    let n = usize::try_from(meta.index_size).expect("index fits in memory");
    assert_eq!(reader.block_count(), meta.index_size);
    assert_eq!(reader.size(), meta.original_file_size);
    let bs = u64::from(meta.block_size);
    assert_eq!(meta.original_file_size.div_ceil(bs), meta.index_size);

    // The jump table must be the prefix sums of the stored u32 entries.
    let at = usize::try_from(meta.index_offset).expect("index inside the input");
    let raw = data
        .get(at..at + 4 * n)
        .expect("an opened file's index lies inside it");
    let table = reader.jump_table();
    let mut pos = meta.data_offset();
    let mut crc_ok = true;
    for (i, e) in raw.chunks_exact(4).enumerate() {
        assert_eq!(table.offset(i), pos, "jump table offset of block {i}");
        let len = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
        assert_eq!(table.len(i), len, "jump table length of block {i}");
        if meta.has_block_crc() && crc_ok {
            let s = usize::try_from(pos).expect("block inside the input");
            let stored = &data[s..s + len as usize];
            let (body, tail) = stored.split_at(stored.len() - 4);
            crc_ok = block_crc(body).to_le_bytes() == tail;
        }
        pos += len;
    }
    assert_eq!(table.end(), pos);
    assert_eq!(pos, meta.index_offset, "blocks must end where the index starts");

    match reader.verify_all() {
        Ok(()) => assert!(meta.has_block_crc() && crc_ok, "verify_all passed bad CRCs"),
        Err(e) => {
            assert!(e.offset().is_some(), "verify error without offset: {e}");
            if meta.has_block_crc() {
                assert!(!crc_ok, "verify_all failed on good CRCs: {e}");
                assert_eq!(e.kind(), ErrorKind::Checksum, "{e}");
            } else {
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            }
        }
    }
    check_reads(&reader, bs);
}

/// Read windows of the content in a few pieces, then odd ranges, and check they agree.
fn check_reads(reader: &ZFileReader<MemDevice>, bs: u64) {
    let size = reader.size();
    let windows = if size <= READ_CAP {
        vec![(0, size)]
    } else {
        vec![(0, READ_CAP / 2), (size - READ_CAP / 2, size)]
    };
    // Window contents as far as they read, keyed by start offset.
    let mut known: Vec<(u64, Vec<u8>)> = Vec::new();
    for &(lo, hi) in &windows {
        let piece = ((hi - lo) / 3).max(1);
        let mut at = lo;
        while at < hi {
            let len = piece.min(hi - at);
            match reader.read_vec(at, len as usize) {
                Ok(v) => {
                    assert_eq!(v.len() as u64, len);
                    known.push((at, v));
                }
                Err(e) => {
                    assert!(e.offset().is_some(), "read error without offset: {e}");
                    assert_ne!(e.kind(), ErrorKind::OutOfRange, "in-range read: {e}");
                }
            }
            at += len;
        }
    }
    // Join pieces that follow each other, so probes across piece edges compare too.
    let mut joined: Vec<(u64, Vec<u8>)> = Vec::new();
    for (start, v) in known {
        match joined.last_mut() {
            Some((s, prev)) if *s + prev.len() as u64 == start => prev.extend_from_slice(&v),
            _ => joined.push((start, v)),
        }
    }
    let known = joined;
    let lookup = |off: u64, len: u64| -> Option<&[u8]> {
        known.iter().find_map(|(start, v)| {
            let rel = usize::try_from(off.checked_sub(*start)?).ok()?;
            v.get(rel..rel + len as usize)
        })
    };
    let probes = [
        (1, 1),
        (bs - 1, 2),
        (bs + 7, bs + 2),
        (3 * bs - 5, 513),
        (size / 2, 3),
        (size.saturating_sub(1), 1),
        (size.saturating_sub(bs + 9), bs + 9),
    ];
    for (off, len) in probes {
        if len == 0 || off >= size || len > size - off || len > READ_CAP / 4 {
            continue;
        }
        match reader.read_vec(off, len as usize) {
            Ok(v) => {
                if let Some(want) = lookup(off, len) {
                    assert_eq!(v, want, "read of {len} bytes at {off} differs from the window");
                }
            }
            Err(e) => {
                assert!(e.offset().is_some(), "read error without offset: {e}");
                assert!(
                    lookup(off, len).is_none(),
                    "read of {len} at {off} fails inside a window that read: {e}"
                );
            }
        }
    }
    assert!(reader.read_vec(size, 1).is_err(), "read past the end");
    assert!(reader.read_vec(size, 0).is_ok(), "empty read at the end");
}

fn check_round_trip(data: &[u8]) {
    let b = data.first().copied().unwrap_or(0);
    let opts = ZFileOptions {
        algorithm: if b & 1 == 0 {
            Algorithm::Lz4
        } else {
            Algorithm::Zstd
        },
        crc: b & 2 != 0,
        block_size: 4096 << ((b >> 2) % 5),
        threads: 1,
    };
    let overwrite = b & 0x20 != 0;
    let file = compress_to_vec(data, &opts, overwrite).expect("compress");
    let r = ZFileReader::open(MemDevice::from_vec(file)).expect("our own ZFile opens");
    assert_eq!(r.size(), data.len() as u64);
    assert_eq!(r.header_overwrite(), overwrite);
    assert_eq!(r.algorithm(), opts.algorithm);
    assert_eq!(r.block_size(), opts.block_size);
    assert_eq!(r.read_vec(0, data.len()).expect("read back"), data);
    if opts.crc {
        r.verify_all().expect("our own CRCs verify");
    }
}
