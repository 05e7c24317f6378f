//! Fuzz the ZFile reader: arbitrary bytes as a ZFile (header, trailer, jump table, blocks,
//! CRCs) and as content to compress and read back. The checks live in
//! `obd_zfile::fuzzing::fuzz_one`, which `crates/obd-zfile/tests/fuzz_corpus.rs` also runs
//! over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_zfile::fuzzing::fuzz_one(data);
});
