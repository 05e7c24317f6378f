//! Fuzz the config parsers: arbitrary bytes as a `config.v1.json` and as an `overlaybd.json`
//! (types, unknown fields, validation, the write-back round trip). The checks live in
//! `obd_image::fuzzing::fuzz_one`, which `crates/obd-image/tests/fuzz_corpus.rs` also runs
//! over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_image::fuzzing::fuzz_one(data);
});
