//! Replays the fuzz corpus and any saved crash inputs through the fuzz target's code, so that
//! every regression file keeps being checked by a plain `cargo test`.

use std::fs;
use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn replay(dir: &Path) -> usize {
    obd_core::testing::replay_fuzz_dir(dir, obd_tar::fuzzing::fuzz_one)
}

#[test]
fn corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let corpus = replay(&fuzz.join("corpus/tar_wrapper"));
    assert!(corpus >= 5, "the seed corpus is missing ({corpus} files)");
    replay(&fuzz.join("artifacts/tar_wrapper"));
}

#[test]
fn seed_corpus_covers_tars_and_non_tars() {
    let dir = Path::new(FUZZ_DIR).join("corpus/tar_wrapper");
    let mut tars = 0;
    let mut plain = 0;
    let mut errors = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let data = fs::read(entry.unwrap().path()).unwrap();
        match obd_tar::layout::detect(&data) {
            Ok(Some(_)) => tars += 1,
            Ok(None) => plain += 1,
            Err(_) => errors += 1,
        }
    }
    assert!(
        tars >= 4 && plain >= 2 && errors >= 1,
        "{tars} tars, {plain} plain, {errors} bad"
    );
}
