//! Fuzz the sealed LSMT layer reader: arbitrary bytes as a committed or sealed layer (header,
//! trailer, index, reads), as a stack of 1 to 3 copies, and flattened again. The checks live
//! in `obd_lsmt::fuzzing::fuzz_one`, which `crates/obd-lsmt/tests/fuzz_corpus.rs` also runs
//! over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_lsmt::fuzzing::fuzz_one(data);
});
