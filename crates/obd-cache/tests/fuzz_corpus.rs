//! Replays the fuzz corpus and any saved crash inputs of the target `cache_meta` through the
//! fuzz target's code, so every regression file keeps being checked by a plain `cargo test`.
//! `cargo test -p obd-cache --test fuzz_corpus -- --ignored` rewrites the seed corpus.

use std::path::Path;

use obd_cache::fuzzing;
use obd_cache::meta;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

#[test]
fn cache_meta_corpus_and_artifacts_replay_cleanly() {
    let fuzz = Path::new(FUZZ_DIR);
    let n = obd_core::testing::replay_fuzz_dir(&fuzz.join("corpus/cache_meta"), fuzzing::fuzz_one);
    assert!(n >= 8, "the seed corpus is missing ({n} files)");
    obd_core::testing::replay_fuzz_dir(&fuzz.join("artifacts/cache_meta"), fuzzing::fuzz_one);
}

#[test]
fn seed_corpus_has_valid_and_damaged_metas() {
    let dir = Path::new(FUZZ_DIR).join("corpus/cache_meta");
    let (mut ok, mut bad) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        match meta::parse(&data) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    assert!(ok >= 3 && bad >= 4, "{ok} valid, {bad} damaged");
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let all = fuzzing::good_meta(&[0, 1, 2, 3]);
    let some = fuzzing::good_meta(&[1, 3]);
    let records = |m: &[u8], last: u8| {
        let mut v = vec![0x01];
        v.extend_from_slice(&m[meta::HEADER_LEN..]);
        v.push(last);
        v
    };
    let mut wrong = all.clone();
    wrong[meta::HEADER_LEN + 8] ^= 0xff; // unit 0's first CRC: re-checked by the fix-up flag
    let mut version = meta::encode_header(&fuzzing::header());
    version[8] = 2;
    let crc = crc32c::crc32c(&version[..92]);
    version[92..].copy_from_slice(&crc.to_le_bytes());
    let mut rng = 0x1234_5678u32;
    let garbage = (0..300)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng as u8
        })
        .collect();
    vec![
        ("empty", Vec::new()),
        ("garbage", garbage),
        ("valid_all_present", all.clone()),
        ("valid_some_present", some.clone()),
        ("header_only", all[..meta::HEADER_LEN].to_vec()),
        ("truncated_mid_record", all[..150].to_vec()),
        ("bad_version", version.to_vec()),
        ("records_all_present_data_whole", records(&all, 0xff)),
        ("records_some_present_data_half", records(&some, 0x80)),
        ("records_wrong_crc_trusted", records(&wrong, 0xff)),
        ("too_long", [all.clone(), vec![0; 12]].concat()),
    ]
}

#[test]
#[ignore = "rewrites the committed seed corpus"]
fn write_seed_corpus() {
    let dir = Path::new(FUZZ_DIR).join("corpus/cache_meta");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn seeds_reach_the_interesting_paths() {
    for (name, bytes) in seeds() {
        fuzzing::fuzz_one(&bytes);
        if name.starts_with("valid") {
            assert!(!meta::parse(&bytes).unwrap().present.is_empty(), "{name}");
        }
    }
}
