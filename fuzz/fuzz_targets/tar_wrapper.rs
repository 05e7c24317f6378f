//! Fuzz the tar wrapper reader: arbitrary bytes as a (possibly tar-wrapped) layer file, and
//! as a payload to wrap and read back. The checks live in `obd_tar::fuzzing::fuzz_one`, which
//! `crates/obd-tar/tests/fuzz_corpus.rs` also runs over the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_tar::fuzzing::fuzz_one(data);
});
