//! The code the fuzz target `device_config` runs, shared with the corpus replay test so that
//! every corpus and crash file is also checked by `cargo test`. Not a stable API.

use obd_core::ErrorKind;

use crate::config::device::DeviceConfig;
use crate::config::global::GlobalConfig;

const NAME: &str = "/fuzz/config.v1.json";

/// Feed `data` to both config parsers and check their promises; panics on a broken promise.
///
/// - Parsing never panics; a failure is `InvalidInput` naming the file.
/// - An accepted device config passes its own validation, and writing it back as JSON and
///   parsing that gives the same config with no warnings.
/// - Every warning names the file.
pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match DeviceConfig::parse(text, NAME) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(w.starts_with(NAME), "warning without the file name: {w}");
            }
            loaded
                .value
                .validate(NAME)
                .expect("accepted config must validate");
            let json = serde_json::to_string(&loaded.value).expect("serialize");
            let again = DeviceConfig::parse(&json, NAME).expect("re-parse of own output");
            assert_eq!(again.value, loaded.value, "round trip changed the config");
            assert!(again.warnings.is_empty(), "own output has unknown fields");
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(
                e.to_string().starts_with(NAME),
                "error without the file: {e}"
            );
        }
    }
    match GlobalConfig::parse(text, NAME) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(w.starts_with(NAME), "warning without the file name: {w}");
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(
                e.to_string().starts_with(NAME),
                "error without the file: {e}"
            );
        }
    }
}

/// The fuzz target `trace`: `data` as a binary trace file and as a prefetch list; panics on
/// a broken promise.
///
/// - Decoding never panics; a failure is `Corrupt`/`Checksum` with an offset inside the file.
/// - Accepted records have non-negative offsets, and encoding them gives a file of the same
///   size that decodes to the same records; equal bytes once the padding is zeroed.
/// - An accepted list holds only absolute paths and parses to itself again.
pub fn fuzz_trace(data: &[u8]) {
    use crate::prefetch::{self, Plan, trace};
    match trace::decode(data) {
        Ok(records) => {
            assert!(records.iter().all(|r| r.offset >= 0));
            let again = trace::encode(&records);
            assert_eq!(again.len(), data.len());
            assert_eq!(trace::decode(&again).expect("re-decode"), records);
            let mut zeroed = data.to_vec();
            zeroed[4..8].fill(0);
            zeroed[20..24].fill(0);
            for rec in zeroed[trace::HEADER_SIZE..].chunks_exact_mut(trace::RECORD_SIZE) {
                rec[1..4].fill(0);
            }
            // The checksum (16..20) covers the stored padding; everything else must match.
            assert_eq!(again[..16], zeroed[..16]);
            assert_eq!(again[20..], zeroed[20..]);
        }
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Checksum),
                "{e}"
            );
            let at = e.offset().expect("trace errors carry an offset");
            assert!(at <= data.len() as u64, "{e}");
        }
    }
    if let Ok(Plan::FileList(paths)) = prefetch::plan_from_bytes(data) {
        assert!(paths.iter().all(|p| p.starts_with('/')), "{paths:?}");
        let text = paths.join("\n");
        assert_eq!(prefetch::parse_list(&text).expect("re-parse"), paths);
    }
}
