//! Fuzz the blob cache's meta files: arbitrary bytes as a whole `.meta` file, as the unit
//! records after a valid header, and end to end (that meta plus a damaged data file in a
//! fresh cache directory must still read back exactly the source bytes). The checks live in
//! `obd_cache::fuzzing::fuzz_one`, which `crates/obd-cache/tests/fuzz_corpus.rs` also runs
//! over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_cache::fuzzing::fuzz_one(data);
});
