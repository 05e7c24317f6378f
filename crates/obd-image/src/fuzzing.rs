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
