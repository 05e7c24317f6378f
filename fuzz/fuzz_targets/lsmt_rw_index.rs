//! Fuzz the replay of an append-only writable layer's index log: arbitrary bytes as the index
//! file (or as the log after a valid header), replayed against a fixed data file, read and
//! committed. The checks live in `obd_lsmt::fuzzing::fuzz_rw_index`, which
//! `crates/obd-lsmt/tests/fuzz_corpus.rs` also runs over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_lsmt::fuzzing::fuzz_rw_index(data);
});
