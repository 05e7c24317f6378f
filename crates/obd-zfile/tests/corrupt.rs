//! Damaged ZFiles: every failure is an error naming the file and an offset, never a panic
//! and never wrong bytes.

use std::path::{Path, PathBuf};

use obd_core::{Error, ErrorKind, FileDevice, ReadAt};
use obd_zfile::layout::{HEADER_SIZE, index_crc};
use obd_zfile::{Algorithm, ZFileHeader, ZFileOptions, ZFileReader, compress_to_vec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn input() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| match (i / 5000) % 3 {
            2 => (i.wrapping_mul(2_654_435_761) >> 13) as u8,
            _ => b"abcdefgh\n"[(i % 9) as usize],
        })
        .collect()
}

fn zfile(algorithm: Algorithm, crc: bool, overwrite: bool) -> Vec<u8> {
    let o = ZFileOptions {
        algorithm,
        block_size: 4096,
        crc,
        threads: 1,
    };
    compress_to_vec(&input(), &o, overwrite).unwrap()
}

struct Tmp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write_tmp(bytes: &[u8]) -> Tmp {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.zfile");
    std::fs::write(&path, bytes).unwrap();
    Tmp { _dir: dir, path }
}

fn open(bytes: &[u8]) -> (Tmp, obd_core::Result<ZFileReader<FileDevice>>) {
    let t = write_tmp(bytes);
    let r = ZFileReader::open(FileDevice::open(&t.path).unwrap());
    (t, r)
}

fn assert_located(e: &Error, path: &Path, kind: ErrorKind) {
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(e.path(), Some(path), "{e}");
    assert!(e.offset().is_some(), "no offset in: {e}");
    assert!(e.to_string().contains(path.to_str().unwrap()));
}

fn open_err(bytes: &[u8], kind: ErrorKind) -> Error {
    let (t, r) = open(bytes);
    let e = r.expect_err("open must fail");
    assert_located(&e, &t.path, kind);
    e
}

/// Rewrite the trailer with `f` applied, keeping its digest valid.
fn edit_trailer(bytes: &mut [u8], f: impl FnOnce(&mut ZFileHeader)) {
    let n = bytes.len();
    let mut t = ZFileHeader::decode(&bytes[n - HEADER_SIZE..]).unwrap();
    f(&mut t);
    bytes[n - HEADER_SIZE..].copy_from_slice(&t.encode());
}

#[test]
fn truncated_files() {
    for overwrite in [false, true] {
        let z = zfile(Algorithm::Lz4, true, overwrite);
        for len in [
            0,
            10,
            511,
            512,
            700,
            z.len() / 2,
            z.len() - 513,
            z.len() - 1,
        ] {
            let (t, r) = open(&z[..len]);
            let e = r.expect_err("truncated file must not open");
            assert_eq!(e.path(), Some(t.path.as_path()), "{e}");
            assert!(e.offset().is_some(), "{e}");
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::OutOfRange),
                "{e}"
            );
        }
    }
}

#[test]
fn wrong_magic() {
    let mut z = zfile(Algorithm::Lz4, true, false);
    z[0] = b'X';
    let e = open_err(&z, ErrorKind::Corrupt);
    assert_eq!(e.offset(), Some(0));
}

#[test]
fn header_and_trailer_digest_mismatch() {
    let z = zfile(Algorithm::Zstd, true, true);
    let mut h = z.clone();
    h[300] ^= 0x40;
    assert_eq!(open_err(&h, ErrorKind::Checksum).offset(), Some(0));
    let mut h = z.clone();
    h[72] ^= 1; // block size
    open_err(&h, ErrorKind::Checksum);
    let mut t = zfile(Algorithm::Zstd, true, false);
    let n = t.len();
    t[n - 512 + 60] ^= 1; // trailer original size
    assert_eq!(
        open_err(&t, ErrorKind::Checksum).offset(),
        Some(n as u64 - 512)
    );
}

#[test]
fn index_crc_mismatch() {
    let mut z = zfile(Algorithm::Lz4, true, false);
    let t = ZFileHeader::decode(&z[z.len() - 512..]).unwrap();
    z[t.index_offset as usize + 5] ^= 0x10;
    let e = open_err(&z, ErrorKind::Checksum);
    assert_eq!(e.offset(), Some(t.index_offset));
}

#[test]
fn index_entries_that_overflow_the_file() {
    let z = zfile(Algorithm::Lz4, true, false);
    let t = ZFileHeader::decode(&z[z.len() - 512..]).unwrap();
    let io = t.index_offset as usize;
    let entries = |b: &[u8]| -> Vec<u32> {
        b[io..io + 4 * t.index_size as usize]
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    for (i, val) in [
        (3usize, u32::MAX),
        (0, 0x7fff_0000),
        (10, 3000),
        (48, 4),
        (5, 0),
    ] {
        let mut b = z.clone();
        b[io + 4 * i..io + 4 * i + 4].copy_from_slice(&val.to_le_bytes());
        let crc = index_crc(&entries(&b));
        edit_trailer(&mut b, |h| h.index_crc = crc);
        let e = open_err(&b, ErrorKind::Corrupt);
        assert!(e.offset().unwrap() >= t.index_offset, "{e}");
    }
    // An index that claims to extend past the trailer.
    let mut b = z.clone();
    edit_trailer(&mut b, |h| h.index_offset = z.len() as u64 - 600);
    open_err(&b, ErrorKind::Corrupt);
    let mut b = z.clone();
    edit_trailer(&mut b, |h| h.index_offset = u64::MAX - 3);
    open_err(&b, ErrorKind::Corrupt);
    // Entry count not matching the original size.
    let mut b = z.clone();
    edit_trailer(&mut b, |h| h.original_file_size += 4096);
    open_err(&b, ErrorKind::Corrupt);
    let mut b = z.clone();
    edit_trailer(&mut b, |h| h.index_size = 2_000_000_000);
    open_err(&b, ErrorKind::Corrupt);
}

#[test]
fn unsupported_parameters() {
    let z = zfile(Algorithm::Lz4, true, false);
    for f in [
        (|h: &mut ZFileHeader| h.block_size = 131072) as fn(&mut ZFileHeader),
        |h| h.block_size = 12288,
        |h| h.algo = 0,
        |h| h.algo = 7,
        |h| h.dict_size = 4096,
    ] {
        let mut b = z.clone();
        edit_trailer(&mut b, f);
        let e = open_err(&b, ErrorKind::Unsupported);
        assert!(!e.message().is_empty());
    }
}

#[test]
fn flipped_data_byte_is_a_checksum_error_naming_the_block() {
    let z = zfile(Algorithm::Lz4, true, false);
    let t = ZFileHeader::decode(&z[z.len() - 512..]).unwrap();
    let first_len =
        u32::from_le_bytes(z[t.index_offset as usize..][..4].try_into().unwrap()) as u64;
    let mut b = z.clone();
    b[512 + first_len as usize + 3] ^= 0x01; // inside block 1
    let (tmp, r) = open(&b);
    let r = r.unwrap();
    let e = r.read_vec(0, 200_000).unwrap_err();
    assert_located(&e, &tmp.path, ErrorKind::Checksum);
    assert_eq!(e.offset(), Some(512 + first_len));
    assert!(e.to_string().contains("block 1"), "{e}");
    // Block 0 alone is still readable; the bad block is reported by verify_all too.
    assert!(r.read_vec(0, 4096).unwrap() == input()[..4096]);
    let e = r.verify_all().unwrap_err();
    assert_located(&e, &tmp.path, ErrorKind::Checksum);
    // Whole-file extraction (multi-threaded) stops with the same error.
    let e = obd_zfile::decompress_to(&r, std::io::sink()).unwrap_err();
    assert_located(&e, &tmp.path, ErrorKind::Checksum);
    assert_eq!(e.offset(), Some(512 + first_len));
}

#[test]
fn random_single_byte_flips_never_yield_wrong_bytes() {
    // With CRCs and digests every byte is covered: each flip either fails or (for bytes
    // the reader does not use) reads the original content.
    let want = input();
    for overwrite in [false, true] {
        for algo in [Algorithm::Lz4, Algorithm::Zstd] {
            let z = zfile(algo, true, overwrite);
            let mut rng = StdRng::seed_from_u64(77);
            for _ in 0..60 {
                let mut b = z.clone();
                let at = rng.random_range(0..b.len());
                b[at] ^= 1 << rng.random_range(0..8);
                let (_t, r) = open(&b);
                let Ok(r) = r else { continue };
                if let Ok(got) = r.read_vec(0, want.len()) {
                    assert!(got == want, "flip at {at} returned wrong bytes");
                }
            }
        }
    }
}

#[test]
fn damaged_files_without_crc_do_not_panic() {
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        let z = zfile(algo, false, false);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..100 {
            let mut b = z.clone();
            for _ in 0..4 {
                let at = rng.random_range(512..b.len() - 512);
                b[at] = rng.random();
            }
            let (_t, r) = open(&b);
            if let Ok(r) = r {
                let _ = r.read_vec(0, 200_000);
            }
        }
    }
}

#[test]
fn parallel_extraction_reports_a_bad_block_late_in_the_file() {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let o = ZFileOptions {
        algorithm: Algorithm::Zstd,
        block_size: 4096,
        crc: true,
        threads: 2,
    };
    let mut z = compress_to_vec(&data, &o, false).unwrap();
    let t = ZFileHeader::decode(&z[z.len() - 512..]).unwrap();
    let target = t.index_offset as usize - 100; // inside the last block
    z[target] ^= 0x80;
    let (tmp, r) = open(&z);
    let r = r.unwrap();
    let e = obd_zfile::decompress_to(&r, std::io::sink()).unwrap_err();
    assert_located(&e, &tmp.path, ErrorKind::Checksum);
    assert!(
        e.to_string()
            .contains(&format!("block {}", t.index_size - 1)),
        "{e}"
    );
}
