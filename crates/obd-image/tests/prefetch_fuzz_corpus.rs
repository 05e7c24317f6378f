//! Replays the `trace` fuzz corpus and any saved crash inputs through the fuzz target's code,
//! so that every regression file keeps being checked by a plain `cargo test`.

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

#[test]
fn trace_corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let corpus = obd_core::testing::replay_fuzz_dir(
        &fuzz.join("corpus/trace"),
        obd_image::fuzzing::fuzz_trace,
    );
    assert!(corpus >= 5, "the seed corpus is missing ({corpus} files)");
    obd_core::testing::replay_fuzz_dir(
        &fuzz.join("artifacts/trace"),
        obd_image::fuzzing::fuzz_trace,
    );
}

#[test]
fn seed_corpus_has_valid_and_invalid_traces() {
    let dir = Path::new(FUZZ_DIR).join("corpus/trace");
    let (mut ok, mut bad) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if !obd_image::prefetch::trace::has_magic(&bytes) {
            continue;
        }
        match obd_image::prefetch::decode(&bytes) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    assert!(ok >= 3 && bad >= 3, "{ok} valid, {bad} invalid seeds");
}
