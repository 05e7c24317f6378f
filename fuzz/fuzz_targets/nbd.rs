//! Fuzz the NBD server: arbitrary bytes through the option and request decoders (decode →
//! re-encode, request validation), then as the client side of a whole session (handshake and
//! transmission) against an in-memory export, checked against a model. The checks live in
//! `obd_nbd::fuzzing::fuzz_one`, which `crates/obd-nbd/tests/fuzz_corpus.rs` also runs over
//! the corpus and any crash artifacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    obd_nbd::fuzzing::fuzz_one(data);
});
