//! The code the fuzz target `cache_meta` runs, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`) so every corpus and crash file is also checked by `cargo test`.
//! Not a stable API.
//!
//! [`fuzz_one`] feeds the bytes
//! 1. to [`meta::parse`] as a whole meta file (no panic; what parses is consistent);
//! 2. as the records after a fixed valid header, optionally with every present record's
//!    check word fixed up (input byte 0, bit 0) so that records with wrong CRCs are trusted
//!    by the parser and must be caught by data verification;
//! 3. end to end: that meta plus a data file (the blob's bytes, cut short and with bytes
//!    flipped as the input says) are put in a fresh cache directory; the blob is opened and
//!    read whole and in pieces, and every read must return exactly the source bytes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use obd_core::{MemDevice, ReadAt};

use crate::meta::{self, HEADER_LEN, MetaHeader};
use crate::{BlobCache, CacheOptions};

/// Size of the fuzzed blob: three 8 KiB units and a short one.
const SIZE: u64 = 3 * 8192 + 1234;
/// Unit size of the fuzzed meta.
const REFILL: u32 = 8192;
/// Digest of the fuzzed blob (a name only; nothing is side-loaded).
const HEX: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// The blob's bytes.
pub fn source_bytes() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The valid header of the fuzzed blob.
pub fn header() -> MetaHeader {
    MetaHeader {
        digest: crate::layout::digest_bytes(HEX),
        size: SIZE,
        refill: REFILL,
        last_used_ms: 1_700_000_000_000,
    }
}

/// A meta file: the fixed header followed by `records` (cut to the full length); with
/// `fix`, every record whose state word says present gets a valid check word.
pub fn meta_with_records(records: &[u8], fix: bool) -> Vec<u8> {
    let full = meta::full_len(SIZE, REFILL) as usize;
    let mut m = meta::encode_header(&header()).to_vec();
    m.extend_from_slice(&records[..records.len().min(full - HEADER_LEN)]);
    if fix {
        let rl = meta::record_len(REFILL);
        let bpu = rl / 4 - 2;
        let mut at = HEADER_LEN;
        let mut u = 0u64;
        while at + rl <= m.len() {
            if m[at..at + 4] == meta::PRESENT.to_le_bytes() {
                let crcs: Vec<u32> = m[at + 8..at + rl]
                    .chunks_exact(4)
                    .take(bpu)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let rec = meta::encode_present(REFILL, u, &crcs);
                m[at..at + rl].copy_from_slice(&rec);
            }
            at += rl;
            u += 1;
        }
    }
    m
}

/// A meta file where units listed in `present` carry their correct CRCs.
pub fn good_meta(present: &[u64]) -> Vec<u8> {
    let src = source_bytes();
    let mut m = meta::encode_header(&header()).to_vec();
    let units = meta::unit_count(SIZE, u64::from(REFILL));
    for u in 0..units {
        if present.contains(&u) {
            let s = (u * u64::from(REFILL)) as usize;
            let e = (s + REFILL as usize).min(src.len());
            let crcs: Vec<u32> = src[s..e].chunks(4096).map(crc32c::crc32c).collect();
            m.extend(meta::encode_present(REFILL, u, &crcs));
        } else {
            m.extend(vec![0u8; meta::record_len(REFILL)]);
        }
    }
    m
}

fn check_parsed(p: &meta::ParsedMeta) {
    let unit = u64::from(p.header.refill);
    let units = meta::unit_count(p.header.size, unit);
    let mut prev = None;
    for (u, crcs) in &p.present {
        assert!(*u < units, "present unit {u} beyond {units}");
        assert!(prev.is_none_or(|q| q < *u), "units out of order");
        prev = Some(*u);
        let (s, e) = crate::blob::unit_bounds(*u, unit, p.header.size);
        assert_eq!(crcs.len() as u64, (e - s).div_ceil(meta::BLOCK));
    }
    assert_eq!(
        meta::parse_header(&meta::encode_header(&p.header))
            .ok()
            .as_ref(),
        Some(&p.header)
    );
}

/// Run every check on `data`; panics when a promise is broken.
pub fn fuzz_one(data: &[u8]) {
    if let Ok(p) = meta::parse(data) {
        check_parsed(&p);
    }
    let fix = data.first().is_some_and(|b| b & 1 == 1);
    let records = data.get(1..).unwrap_or_default();
    let m = meta_with_records(records, fix);
    let p = meta::parse(&m).expect("a meta with a valid header and no excess always parses");
    check_parsed(&p);
    end_to_end(&m, data);
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory `obd-cache-fuzz-<pid>-<n>` in `/dev/shm` (else the temp dir). The
/// first call removes the directories of processes that are gone (crashed fuzz runs).
fn temp_dir() -> TempDir {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = N.fetch_add(1, Ordering::Relaxed);
    if n == 0
        && let Ok(rd) = std::fs::read_dir(&base)
    {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("obd-cache-fuzz-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    TempDir(base.join(format!("obd-cache-fuzz-{}-{n}", std::process::id())))
}

/// Put `meta` and a damaged data file into a fresh cache and read the blob back.
pub fn end_to_end(meta_bytes: &[u8], knobs: &[u8]) {
    let src = source_bytes();
    let mut data = src.clone();
    // Last byte: how much of the data file survives (in 1/255ths); pairs before it: flips.
    if let Some(&cut) = knobs.last() {
        let keep = (data.len() as u64 * u64::from(cut) / 255) as usize;
        data.truncate(keep.max(1));
    }
    for pair in knobs.get(1..).unwrap_or_default().chunks_exact(3).take(16) {
        let at = (usize::from(pair[0]) << 8 | usize::from(pair[1])) * 7 % src.len();
        if let Some(b) = data.get_mut(at) {
            *b ^= pair[2] | 1;
        }
    }
    let dir = temp_dir();
    let sub = dir.0.join("sha256");
    std::fs::create_dir_all(&sub).expect("create fuzz cache dir");
    std::fs::write(sub.join(format!("{HEX}.meta")), meta_bytes).expect("write meta");
    std::fs::write(sub.join(format!("{HEX}.data")), &data).expect("write data");
    let cache = BlobCache::open(CacheOptions {
        dir: dir.0.clone(),
        capacity: 1 << 20,
        refill: 4096,
    })
    .expect("open the fuzz cache");
    let source: Arc<dyn ReadAt> = Arc::new(MemDevice::from_vec(src.clone()));
    let blob = cache
        .blob(&format!("sha256:{HEX}"), source)
        .expect("open the fuzz blob");
    let mut pieces = [(0u64, 100u64), (4000, 300), (8191, 2), (SIZE - 1300, 1300)];
    if let Some(&b) = knobs.first() {
        let off = u64::from(b) * 97 % SIZE;
        pieces[0] = (off, (1 + u64::from(b) * 13).min(SIZE - off));
    }
    for (off, len) in pieces {
        let got = blob.read_vec(off, len as usize).expect("fuzz read");
        assert!(
            got == src[off as usize..(off + len) as usize],
            "wrong bytes at {off}+{len}"
        );
    }
    let all = blob.read_vec(0, src.len()).expect("whole read");
    assert!(all == src, "whole read differs from the source");
    let mut again = vec![0u8; src.len()];
    if blob.read_cached(&mut again, 0).expect("read_cached") {
        assert!(again == src, "read_cached returned wrong bytes");
    }
}
