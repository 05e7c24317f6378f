//! Replays the `device_config` fuzz corpus and any saved crash inputs through the fuzz
//! target's code, so that every regression file keeps being checked by a plain `cargo test`.

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn replay(dir: &Path) -> usize {
    obd_core::testing::replay_fuzz_dir(dir, obd_image::fuzzing::fuzz_one)
}

#[test]
fn corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let corpus = replay(&fuzz.join("corpus/device_config"));
    assert!(corpus >= 5, "the seed corpus is missing ({corpus} files)");
    replay(&fuzz.join("artifacts/device_config"));
}

#[test]
fn seed_corpus_has_valid_and_invalid_configs() {
    let dir = Path::new(FUZZ_DIR).join("corpus/device_config");
    let (mut ok, mut bad) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        match obd_image::DeviceConfig::parse(&text, "seed") {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    assert!(ok >= 3 && bad >= 3, "{ok} valid, {bad} invalid seeds");
}
