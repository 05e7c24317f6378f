//! The two JSON configuration files of overlaybd, parsed the way upstream reads them:
//!
//! - [`device::DeviceConfig`]: the per-device `config.v1.json` the snapshotter writes;
//! - [`global::GlobalConfig`]: the service-wide `/etc/overlaybd/overlaybd.json`.
//!
//! Both loaders share one policy, so that configs written for upstream keep working:
//!
//! - **unknown fields** anywhere are reported as warnings naming the file and the JSON path
//!   (`/x/config.v1.json: lowers[1].foo: unknown field, ignored`), never as failures;
//! - **wrong types, missing required fields, invalid values** are an
//!   [`ErrorKind::InvalidInput`](obd_core::ErrorKind::InvalidInput) error whose message names
//!   the file and the JSON path: `/x/config.v1.json: lowers[2].size: invalid type: string
//!   "x", expected u64 at line 1 column 40`.

pub mod device;
pub mod global;
mod global_blocks;
mod global_raw;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use obd_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A parsed configuration and the warnings found while reading it (unknown fields, legacy
/// keys, ignored settings). Dereferences to the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// The configuration.
    pub value: T,
    /// Human-readable warnings, each naming the file and the JSON path it concerns.
    pub warnings: Vec<String>,
}

impl<T> std::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A configuration error: `InvalidInput`, message `<json path>: <what>`, path the file.
pub(crate) fn config_error(name: &str, json_path: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("{json_path}: {what}")).with_path(name)
}

/// Read a config file as UTF-8 text; errors name the file (a missing file is `NotFound`).
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("read config", e).with_path(path))
}

/// Deserialize `text` into `T`, collecting unknown fields as warnings and turning type errors
/// into [`config_error`]s that name `name` and the JSON path.
pub(crate) fn parse_json<T: DeserializeOwned>(text: &str, name: &str) -> Result<(T, Vec<String>)> {
    let mut unknown: Vec<String> = Vec::new();
    let mut jd = serde_json::Deserializer::from_str(text);
    let value = {
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
        let de = serde_ignored::Deserializer::new(&mut jd, &mut record);
        serde_path_to_error::deserialize::<_, Obj<T>>(de)
            .map(|o| o.0)
            .map_err(|e| {
                let at = json_path(e.path());
                config_error(name, &at, e.into_inner())
            })?
    };
    jd.end()
        .map_err(|e| config_error(name, "(after the top-level value)", e))?;
    let warnings = unknown
        .into_iter()
        .map(|p| format!("{name}: {p}: unknown field, ignored"))
        .collect();
    Ok((value, warnings))
}

/// `lowers[2].size` style text for a path from `serde_path_to_error`.
fn json_path(p: &serde_path_to_error::Path) -> String {
    match p.to_string().as_str() {
        "." | "" => "(top level)".to_string(),
        s => s.to_string(),
    }
}

/// `lowers[2].foo` style text for a path from `serde_ignored`.
fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut String) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                let _ = write!(out, "[{index}]");
            }
            P::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut s = String::new();
    walk(p, &mut s);
    if s.is_empty() {
        s.push_str("(top level)");
    }
    s
}

/// A value that must be a JSON object. serde lets structs be written as arrays of their
/// fields in order (`"upper": ["/i", "/d"]`); configs never mean that, so it is a type error.
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Obj)
    }
}

/// A field that must be a JSON object.
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Obj::<T>::deserialize(d)?.0)
}

/// An optional field that must be a JSON object or `null`.
pub(crate) fn opt_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Obj<T>>::deserialize(d)?.map(|o| o.0))
}

/// An array of JSON objects.
pub(crate) fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Obj<T>>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// `"..."` or `null` or absent → `Option<String>`, with `""` meaning absent (upstream's
/// default for every string field is `""`).
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Like [`opt_string`], as a path.
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

/// Whether `s` is `sha256:` followed by 64 lower-case hex digits (an OCI sha256 digest).
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_syntax() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert!(is_sha256_digest(&d));
        assert!(!is_sha256_digest(&d.to_uppercase()));
        assert!(!is_sha256_digest(&d[..70]));
        assert!(!is_sha256_digest(&format!("sha512:{}", "ab".repeat(32))));
    }
}
