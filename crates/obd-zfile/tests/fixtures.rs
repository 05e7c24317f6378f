//! Upstream-made ZFiles: read them, and check our writer produces the same layout.

mod common;

use common::{c_zfile_input, fixture, sha256_hex};
use obd_core::testing::{check_concurrent_reads, check_read_at};
use obd_core::{ErrorKind, FileDevice, ReadAt};
use obd_zfile::layout::{FLAG_DATA, FLAG_DIGEST, FLAG_HEADER, FLAG_HEADER_OVERWRITE, FLAG_SEALED};
use obd_zfile::{
    Algorithm, ZFileHeader, ZFileOptions, ZFileReader, compress_to_vec, decompress_to,
};

fn open(rel: &str) -> ZFileReader<FileDevice> {
    ZFileReader::open(FileDevice::open(fixture(rel)).unwrap()).unwrap()
}

#[test]
fn generator_port_matches_recorded_hashes() {
    c_zfile_input("mixed2m");
    c_zfile_input("odd1000003");
}

#[test]
fn c_zfile_outputs_decompress_to_the_input() {
    let input = c_zfile_input("odd1000003");
    for (name, algo, crc) in [
        ("odd1000003.lz4.bs4k.crc.zfile", Algorithm::Lz4, true),
        ("odd1000003.zstd.bs4k.nocrc.zfile", Algorithm::Zstd, false),
    ] {
        let z = open(&format!("c_zfile/out/{name}"));
        let info = z.info();
        assert_eq!(info.algorithm, algo);
        assert_eq!(info.verify, crc);
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.blocks, 245);
        assert!(!info.header_overwrite);
        assert!(info.digest);
        let mut out = Vec::new();
        assert_eq!(decompress_to(&z, &mut out).unwrap(), input.len() as u64);
        assert!(out == input, "{name} decompresses to something else");
        check_read_at(&z, &input, 1, 7);
        check_concurrent_reads(&z, &input, 1);
        if crc {
            z.verify_all().unwrap();
        } else {
            let e = z.verify_all().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}

#[test]
fn our_writer_matches_upstream_layout() {
    let input = c_zfile_input("odd1000003");
    for (name, algo, crc) in [
        ("odd1000003.lz4.bs4k.crc.zfile", Algorithm::Lz4, true),
        ("odd1000003.zstd.bs4k.nocrc.zfile", Algorithm::Zstd, false),
    ] {
        let theirs = std::fs::read(fixture(&format!("c_zfile/out/{name}"))).unwrap();
        let opts = ZFileOptions {
            algorithm: algo,
            block_size: 4096,
            crc,
            threads: 2,
        };
        let ours = compress_to_vec(&input, &opts, false).unwrap();
        let (th, oh) = (
            ZFileHeader::decode(&theirs).unwrap(),
            ZFileHeader::decode(&ours).unwrap(),
        );
        assert_eq!(oh, th, "{name}: initial header differs");
        assert_eq!(ours[..512], theirs[..512], "{name}: header bytes differ");
        let tt = ZFileHeader::decode(&theirs[theirs.len() - 512..]).unwrap();
        let ot = ZFileHeader::decode(&ours[ours.len() - 512..]).unwrap();
        assert_eq!(ot.flags, FLAG_DATA | FLAG_SEALED | FLAG_DIGEST);
        assert_eq!(ot.flags, tt.flags);
        for (a, b) in [
            (ot.index_size, tt.index_size),
            (ot.original_file_size, tt.original_file_size),
            (u64::from(ot.block_size), u64::from(tt.block_size)),
            (u64::from(ot.algo), u64::from(tt.algo)),
            (u64::from(ot.verify), u64::from(tt.verify)),
            (u64::from(ot.size), u64::from(tt.size)),
        ] {
            assert_eq!(a, b, "{name}: trailer field differs");
        }
        // Our decoder re-encodes upstream's trailer exactly, digest included.
        assert_eq!(tt.encode()[..], theirs[theirs.len() - 512..]);
        let back = ZFileReader::open(obd_core::MemDevice::from_vec(ours.clone())).unwrap();
        assert!(back.read_vec(0, input.len()).unwrap() == input);
        if algo == Algorithm::Zstd {
            // Upstream's binary was built against another libzstd release, so level-3
            // frames differ by a few bytes in some blocks; the frame headers (single
            // segment, 2-byte content size) are the same for every block.
            let (to, oo) = (block_offsets(&theirs), block_offsets(&ours));
            assert_eq!(to.len(), oo.len());
            let mut same = 0;
            for (t, o) in to.windows(2).zip(oo.windows(2)) {
                let (tb, ob) = (&theirs[t[0]..t[1]], &ours[o[0]..o[1]]);
                assert_eq!(tb[..6], ob[..6], "{name}: zstd frame header differs");
                same += usize::from(tb == ob);
            }
            assert!(same > 0, "{name}: no zstd block is identical");
        }
    }
}

#[test]
fn header_overwrite_commit_decompresses_to_the_lsmt_file() {
    let z = open("b_commit/layers/l1.lz4.bs4k.zfile");
    let want = std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap();
    let info = z.info();
    assert!(info.header_overwrite);
    assert_eq!(
        z.header().known_flags(),
        FLAG_HEADER | FLAG_DATA | FLAG_DIGEST | FLAG_HEADER_OVERWRITE
    );
    assert_eq!(info.original_size, 346_112);
    let mut out = Vec::new();
    decompress_to(&z, &mut out).unwrap();
    assert!(out == want);
    z.verify_all().unwrap();
    check_read_at(&z, &want, 512, 3);
}

#[test]
fn real_2021_base_layer_with_garbage_fields() {
    let z = open("e_real/ext4_64");
    let info = z.info();
    assert_eq!(z.size(), 541_937_664);
    assert_eq!(info.blocks, 132_309);
    assert_eq!(info.block_size, 4096);
    assert_eq!(info.algorithm, Algorithm::Lz4);
    assert!(info.verify && !info.header_overwrite && !info.digest);
    assert_eq!(z.header().known_flags(), FLAG_DATA | FLAG_SEALED);
    assert_eq!(z.header().index_offset, 4_207_947);
    let head = z.read_vec(0, 65536).unwrap();
    assert_eq!(&head[..8], b"LSMT\0\x01\x02\0");
    z.verify_all().unwrap();
    // Unaligned reads across block boundaries agree with aligned ones.
    let mid = z.read_vec(4096 * 100, 4096 * 3).unwrap();
    assert_eq!(
        z.read_vec(4096 * 101 - 7, 20).unwrap(),
        mid[4096 - 7..4096 + 13]
    );
}

#[test]
fn real_2021_base_layer_full_hash() {
    let z = open("e_real/ext4_64");
    let mut out = Vec::new();
    decompress_to(&z, &mut out).unwrap();
    assert_eq!(out.len(), 541_937_664);
    let want = std::fs::read_to_string(fixture("e_real/README.md")).unwrap();
    let got = sha256_hex(&out);
    assert!(
        got.starts_with("799dbd74") && got.ends_with("20d5ac7"),
        "{got}"
    );
    assert!(want.contains("799dbd74"));
}

/// Start offsets of every block plus the index offset, from a complete ZFile.
fn block_offsets(file: &[u8]) -> Vec<usize> {
    let t = ZFileHeader::decode(&file[file.len() - 512..]).unwrap();
    let idx = &file[t.index_offset as usize..][..t.index_size as usize * 4];
    let mut v = vec![512usize];
    for c in idx.chunks(4) {
        v.push(v.last().unwrap() + u32::from_le_bytes(c.try_into().unwrap()) as usize);
    }
    v
}
