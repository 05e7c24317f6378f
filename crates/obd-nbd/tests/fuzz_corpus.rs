//! Replays the fuzz corpus and any saved crash inputs of the target `nbd` through the fuzz
//! target's code, so every regression file keeps being checked by a plain `cargo test`.

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

#[test]
fn nbd_corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let n =
        obd_core::testing::replay_fuzz_dir(&fuzz.join("corpus/nbd"), obd_nbd::fuzzing::fuzz_one);
    assert!(n >= 15, "the seed corpus is missing ({n} files)");
    obd_core::testing::replay_fuzz_dir(&fuzz.join("artifacts/nbd"), obd_nbd::fuzzing::fuzz_one);
}

#[test]
fn nbd_seed_corpus_covers_both_phases() {
    let dir = Path::new(FUZZ_DIR).join("corpus/nbd");
    let (mut transmission, mut handshake_only) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        if obd_nbd::fuzzing::reaches_transmission(&data) {
            transmission += 1;
        } else {
            handshake_only += 1;
        }
    }
    assert!(
        transmission >= 8 && handshake_only >= 5,
        "{transmission} / {handshake_only}"
    );
}
