//! Replays the fuzz corpus and any saved crash inputs through the fuzz target's code, so that
//! every regression file keeps being checked by a plain `cargo test`.

use std::fs;
use std::path::Path;

use obd_core::MemDevice;
use obd_zfile::ZFileReader;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn replay(dir: &Path) -> usize {
    obd_core::testing::replay_fuzz_dir(dir, obd_zfile::fuzzing::fuzz_one)
}

#[test]
fn corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let corpus = replay(&fuzz.join("corpus/zfile"));
    assert!(corpus >= 8, "the seed corpus is missing ({corpus} files)");
    replay(&fuzz.join("artifacts/zfile"));
}

#[test]
fn seed_corpus_covers_valid_and_broken_files() {
    let dir = Path::new(FUZZ_DIR).join("corpus/zfile");
    let (mut ok, mut bad) = (0, 0);
    let (mut lz4, mut zstd, mut crc, mut overwrite) = (0, 0, 0, 0);
    for entry in fs::read_dir(dir).unwrap() {
        let data = fs::read(entry.unwrap().path()).unwrap();
        match ZFileReader::open(MemDevice::from_vec(data)) {
            Ok(r) => {
                ok += 1;
                let info = r.info();
                match info.algorithm {
                    obd_zfile::Algorithm::Lz4 => lz4 += 1,
                    obd_zfile::Algorithm::Zstd => zstd += 1,
                }
                crc += usize::from(info.verify);
                overwrite += usize::from(info.header_overwrite);
            }
            Err(_) => bad += 1,
        }
    }
    assert!(
        ok >= 4 && bad >= 3 && lz4 >= 1 && zstd >= 1 && crc >= 1 && crc < ok && overwrite >= 1,
        "{ok} valid ({lz4} lz4, {zstd} zstd, {crc} with CRCs, {overwrite} overwritten), {bad} bad"
    );
}
