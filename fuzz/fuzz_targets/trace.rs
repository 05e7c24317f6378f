//! Fuzz the prefetch trace codec and list parser: arbitrary bytes as a binary trace file
//! (header, size, chained checksum, records) and as a prefetch list. The checks live in
//! `obd_image::fuzzing::fuzz_trace`, which `crates/obd-image/tests/prefetch_fuzz_corpus.rs`
//! also runs over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_image::fuzzing::fuzz_trace(data);
});
