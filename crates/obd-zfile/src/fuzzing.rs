//! The code the fuzz target `zfile` runs, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`) so that every corpus and crash file is also checked by
//! `cargo test`. Not a stable API.

use std::collections::HashMap;

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
    let mut starts = Vec::with_capacity(n + 1);
    let mut pos = meta.data_offset();
    let mut crc_ok = true;
    for (i, e) in raw.chunks_exact(4).enumerate() {
        assert_eq!(table.offset(i), pos, "jump table offset of block {i}");
        let len = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
        assert_eq!(table.len(i), len, "jump table length of block {i}");
        starts.push(pos as usize);
        pos += len;
        crc_ok &= !meta.has_block_crc() || stored_crc_ok(&data[starts[i]..pos as usize]);
    }
    starts.push(pos as usize);
    assert_eq!(table.end(), pos);
    assert_eq!(pos, meta.index_offset, "blocks end where the index starts");

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
    let oracle = Blocks {
        data,
        starts,
        algo: reader.algorithm(),
        crc: meta.has_block_crc(),
        bs,
        size: meta.original_file_size,
        memo: HashMap::new(),
    };
    check_reads(&reader, oracle);
}

/// Whether a stored block ends in the CRC of the bytes before it.
fn stored_crc_ok(stored: &[u8]) -> bool {
    let (body, tail) = stored.split_at(stored.len().saturating_sub(4));
    block_crc(body).to_le_bytes() == tail
}

/// The content as decoded block by block straight from the file bytes, independently of the
/// reader's fetching and slicing: a block reads only if its CRC (when present) matches and it
/// decompresses to exactly its size.
struct Blocks<'a> {
    data: &'a [u8],
    /// File offset of each block, and the end of the last one.
    starts: Vec<usize>,
    algo: Algorithm,
    crc: bool,
    bs: u64,
    size: u64,
    memo: HashMap<u64, Option<Vec<u8>>>,
}

impl Blocks<'_> {
    fn block(&mut self, i: u64) -> Option<&[u8]> {
        let (data, starts, algo, crc) = (self.data, &self.starts, self.algo, self.crc);
        let ulen = self.bs.min(self.size - i * self.bs) as usize;
        self.memo
            .entry(i)
            .or_insert_with(|| {
                let stored = &data[starts[i as usize]..starts[i as usize + 1]];
                if crc && !stored_crc_ok(stored) {
                    return None;
                }
                let body = &stored[..stored.len() - if crc { 4 } else { 0 }];
                let mut out = vec![0u8; ulen];
                let got = match algo {
                    Algorithm::Lz4 => lz4_flex::block::decompress_into(body, &mut out).ok()?,
                    Algorithm::Zstd => zstd::bulk::decompress_to_buffer(body, &mut out).ok()?,
                };
                (got == ulen).then_some(out)
            })
            .as_deref()
    }

    /// The bytes `[off, off + len)`, or `None` if a block they touch does not decode.
    fn expected(&mut self, off: u64, len: u64) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let end = off + len;
        for i in off / self.bs..end.div_ceil(self.bs) {
            let b0 = i * self.bs;
            let block = self.block(i)?;
            let lo = (off.max(b0) - b0) as usize;
            let hi = (end.min(b0 + block.len() as u64) - b0) as usize;
            out.extend_from_slice(&block[lo..hi]);
        }
        Some(out)
    }
}

/// Read windows of the content in a few pieces, then odd ranges: each read must succeed
/// exactly when every block it touches decodes, and return the decoded bytes.
fn check_reads(reader: &ZFileReader<MemDevice>, mut oracle: Blocks<'_>) {
    let (size, bs) = (reader.size(), oracle.bs);
    let windows = if size <= READ_CAP {
        vec![(0, size)]
    } else {
        vec![(0, READ_CAP / 2), (size - READ_CAP / 2, size)]
    };
    let mut reads = Vec::new();
    for &(lo, hi) in &windows {
        let piece = ((hi - lo) / 3).max(1);
        let mut at = lo;
        while at < hi {
            reads.push((at, piece.min(hi - at)));
            at += piece;
        }
    }
    reads.extend([
        (1, 1),
        (bs - 1, 2),
        (bs + 7, bs + 2),
        (3 * bs - 5, 513),
        (size / 2, 3),
        (size.saturating_sub(1), 1),
        (size.saturating_sub(bs + 9), bs + 9),
    ]);
    for (off, len) in reads {
        if len == 0 || off >= size || len > size - off {
            continue;
        }
        let want = oracle.expected(off, len);
        match (reader.read_vec(off, len as usize), want) {
            (Ok(got), Some(want)) => assert!(got == want, "read of {len} bytes at {off}"),
            (Err(e), None) => {
                assert!(e.offset().is_some(), "read error without offset: {e}");
                assert_ne!(e.kind(), ErrorKind::OutOfRange, "in-range read: {e}");
            }
            (Ok(_), None) => panic!("read of {len} bytes at {off} passed a bad block"),
            (Err(e), Some(_)) => panic!("read of {len} bytes at {off} failed on good blocks: {e}"),
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
