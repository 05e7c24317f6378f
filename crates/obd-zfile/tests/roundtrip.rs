//! Round trips through our writer and reader over many shapes of input.

mod common;

use std::io::Write;

use obd_core::testing::{check_concurrent_reads, check_read_at};
use obd_core::{MemDevice, ReadAt};
use obd_zfile::layout::{FLAG_DATA, FLAG_DIGEST, FLAG_HEADER, FLAG_HEADER_OVERWRITE, FLAG_SEALED};
use obd_zfile::{
    Algorithm, ZFileHeader, ZFileOptions, ZFileReader, ZFileWriter, compress_file, compress_to_vec,
    decompress_to,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Deterministic data: runs of repetitive text, zeros and random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let run = rng.random_range(1..20000).min(len - v.len());
        match rng.random_range(0..3) {
            0 => v.extend((0..run).map(|i| b"zfile block index trailer\n"[i % 26])),
            1 => v.resize(v.len() + run, 0),
            _ => v.extend((0..run).map(|_| rng.random::<u8>())),
        }
    }
    v
}

fn opts(algorithm: Algorithm, block_size: u32, crc: bool, threads: usize) -> ZFileOptions {
    ZFileOptions {
        algorithm,
        block_size,
        crc,
        threads,
    }
}

fn round_trip(input: &[u8], o: &ZFileOptions, seed: u64) {
    let one = compress_to_vec(
        input,
        &ZFileOptions {
            threads: 1,
            ..o.clone()
        },
        false,
    )
    .unwrap();
    let many = compress_to_vec(
        input,
        &ZFileOptions {
            threads: 3,
            ..o.clone()
        },
        false,
    )
    .unwrap();
    assert!(one == many, "output depends on the thread count");
    let z = ZFileReader::open(MemDevice::from_vec(one.clone())).unwrap();
    let bs = o.block_size as u64;
    assert_eq!(z.block_count(), (input.len() as u64).div_ceil(bs));
    assert_eq!(z.info().compressed_size, one.len() as u64);
    check_read_at(&z, input, 1, seed);
    if o.crc {
        z.verify_all().unwrap();
    } else {
        assert!(z.verify_all().is_err());
    }
    // The header-overwrite variant reads the same without looking at the trailer.
    let mut ow = compress_to_vec(input, o, true).unwrap();
    let h = ZFileHeader::decode(&ow).unwrap();
    assert_eq!(
        h.flags,
        FLAG_HEADER | FLAG_DATA | FLAG_DIGEST | FLAG_HEADER_OVERWRITE
    );
    let n = ow.len();
    ow[n - 512..].fill(0);
    let z = ZFileReader::open(MemDevice::from_vec(ow)).unwrap();
    assert!(z.header_overwrite());
    assert!(z.read_vec(0, input.len()).unwrap() == input);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_round_trips(
        shift in 0u32..5,
        size_kind in 0usize..7,
        extra in 0usize..300_000,
        zstd in any::<bool>(),
        crc in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let bs = 4096u32 << shift;
        let b = bs as usize;
        let size = [0, 1, b - 1, b, b + 1, 5 * b, extra][size_kind];
        let algo = if zstd { Algorithm::Zstd } else { Algorithm::Lz4 };
        round_trip(&data(size, seed), &opts(algo, bs, crc, 1), seed);
    }
}

#[test]
fn many_blocks_each_shape() {
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        for bs in [4096u32, 65536] {
            let input = data(3 << 20, 99);
            round_trip(&input, &opts(algo, bs, true, 2), 5);
        }
    }
}

#[test]
fn empty_input_is_header_index_trailer() {
    let z = compress_to_vec(&[], &opts(Algorithm::Lz4, 4096, true, 1), false).unwrap();
    assert_eq!(z.len(), 1024);
    let t = ZFileHeader::decode(&z[512..]).unwrap();
    assert_eq!(
        (t.index_offset, t.index_size, t.original_file_size),
        (512, 0, 0)
    );
    assert_eq!(t.flags, FLAG_DATA | FLAG_SEALED | FLAG_DIGEST);
    let r = ZFileReader::open(MemDevice::from_vec(z)).unwrap();
    assert_eq!(r.size(), 0);
    check_read_at(&r, &[], 1, 1);
}

#[test]
fn small_writes_equal_one_big_write() {
    let input = data(700_000, 3);
    let o = opts(Algorithm::Zstd, 8192, true, 2);
    let mut w = ZFileWriter::new(Vec::new(), o.clone()).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let mut rest = &input[..];
    while !rest.is_empty() {
        let n = rng.random_range(0..20000).min(rest.len());
        w.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
    assert_eq!(w.original_size(), input.len() as u64);
    let fin = w.finish().unwrap();
    assert_eq!(fin.blocks, 86);
    assert_eq!(fin.compressed_size, fin.writer.len() as u64);
    assert!(fin.upstream_unreadable.is_empty());
    assert!(fin.writer == compress_to_vec(&input, &o, false).unwrap());
}

#[test]
fn incompressible_64k_blocks_are_flagged_but_readable() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut input: Vec<u8> = (0..4 * 65536).map(|_| rng.random::<u8>()).collect();
    input[65536..2 * 65536].fill(7); // block 1 compresses
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        let mut w = ZFileWriter::new(Vec::new(), opts(algo, 65536, true, 2)).unwrap();
        w.write_all(&input).unwrap();
        let fin = w.finish().unwrap();
        assert_eq!(fin.upstream_unreadable, [0, 2, 3], "{algo:?}");
        let z = ZFileReader::open(MemDevice::from_vec(fin.writer)).unwrap();
        check_read_at(&z, &input, 1, 2);
        // The same data in 32 KiB blocks is upstream-readable.
        let mut w = ZFileWriter::new(Vec::new(), opts(algo, 32768, true, 2)).unwrap();
        w.write_all(&input).unwrap();
        assert!(w.finish().unwrap().upstream_unreadable.is_empty());
    }
}

#[test]
fn concurrent_reads() {
    let input = data(2 << 20, 8);
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        let z = compress_to_vec(&input, &opts(algo, 4096, true, 2), false).unwrap();
        let z = ZFileReader::open(MemDevice::from_vec(z)).unwrap();
        check_concurrent_reads(&z, &input, 1);
        check_concurrent_reads(&z, &input, 4096);
    }
}

#[test]
fn file_helpers_round_trip_with_header_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = data(1_234_567, 21);
    let src = dir.path().join("in.bin");
    let dst = dir.path().join("out.zfile");
    std::fs::write(&src, &input).unwrap();
    let seen = std::cell::Cell::new(0u64);
    let progress = |n: u64| seen.set(n);
    let o = opts(Algorithm::Lz4, 16384, true, 2);
    let fin = compress_file(&src, &dst, &o, true, Some(&progress)).unwrap();
    assert_eq!(seen.get(), input.len() as u64);
    let bytes = std::fs::read(&dst).unwrap();
    assert_eq!(bytes.len() as u64, fin.compressed_size);
    assert_eq!(bytes[..512], fin.header);
    let z = ZFileReader::open(obd_core::FileDevice::open(&dst).unwrap()).unwrap();
    assert!(z.header_overwrite());
    let mut out = Vec::new();
    assert_eq!(decompress_to(&z, &mut out).unwrap(), input.len() as u64);
    assert!(out == input);
    // Without the rewrite the header is upstream's initial one and the rest is identical.
    let plain = compress_to_vec(&input, &o, false).unwrap();
    assert_eq!(plain[512..], bytes[512..]);
    assert_eq!(
        ZFileHeader::decode(&plain).unwrap().flags,
        FLAG_HEADER | FLAG_DATA | FLAG_DIGEST
    );
}

#[test]
fn bad_options_are_rejected() {
    for bs in [0u32, 2048, 12288, 131072] {
        let e = ZFileWriter::new(Vec::new(), opts(Algorithm::Lz4, bs, true, 1))
            .err()
            .unwrap();
        assert_eq!(e.kind(), obd_core::ErrorKind::InvalidInput);
    }
}
