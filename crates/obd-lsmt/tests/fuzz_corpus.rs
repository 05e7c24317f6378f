//! Replays the fuzz corpora and any saved crash inputs of the targets `lsmt` and
//! `lsmt_rw_index` through the fuzz targets' code, so that every regression file keeps being
//! checked by a plain `cargo test`.

use std::fs;
use std::path::Path;

use obd_core::MemDevice;
use obd_lsmt::LsmtLayer;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn replay(dir: &Path, fuzz: fn(&[u8])) -> usize {
    obd_core::testing::replay_fuzz_dir(dir, fuzz)
}

#[test]
fn lsmt_corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let corpus = replay(&fuzz.join("corpus/lsmt"), obd_lsmt::fuzzing::fuzz_one);
    assert!(corpus >= 6, "the seed corpus is missing ({corpus} files)");
    replay(&fuzz.join("artifacts/lsmt"), obd_lsmt::fuzzing::fuzz_one);
}

#[test]
fn rw_index_corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let f = obd_lsmt::fuzzing::fuzz_rw_index;
    let corpus = replay(&fuzz.join("corpus/lsmt_rw_index"), f);
    assert!(corpus >= 5, "the seed corpus is missing ({corpus} files)");
    replay(&fuzz.join("artifacts/lsmt_rw_index"), f);
}

#[test]
fn lsmt_seed_corpus_covers_valid_and_broken_layers() {
    let dir = Path::new(FUZZ_DIR).join("corpus/lsmt");
    let (mut ok, mut bad) = (0, 0);
    for entry in fs::read_dir(dir).unwrap() {
        let data = fs::read(entry.unwrap().path()).unwrap();
        match LsmtLayer::open(MemDevice::from_vec(data)) {
            Ok(l) => {
                assert!(!l.segments().is_empty() || l.vsize() > 0);
                ok += 1;
            }
            Err(_) => bad += 1,
        }
    }
    assert!(ok >= 3 && bad >= 3, "{ok} valid, {bad} bad");
}
