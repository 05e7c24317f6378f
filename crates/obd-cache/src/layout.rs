//! Names and places of the files under the cache directory.

use std::path::{Path, PathBuf};

use obd_core::{Error, Result};

/// Sub-directory holding the blobs.
pub(crate) const SUBDIR: &str = "sha256";
/// Lock file taken by a running cache.
pub(crate) const LOCK_FILE: &str = ".lock";
/// Suffix of a side-loaded file that failed verification.
pub(crate) const REJECTED: &str = ".rejected";

/// Check `digest` is `sha256:<64 lowercase hex>`; returns the hex part.
pub(crate) fn parse_digest(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::invalid_input(format!(
            "blob digest {digest:?} does not start with \"sha256:\""
        ))
    })?;
    if !is_hex64(hex) {
        return Err(Error::invalid_input(format!(
            "blob digest {digest:?} is not \"sha256:\" and 64 lowercase hex digits"
        )));
    }
    Ok(hex)
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The raw 32 bytes of a validated hex digest.
pub(crate) fn digest_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // `hex` was validated by `parse_digest`/`is_hex64`; on failure the zero digest simply
    // never matches a meta header.
    let _ = hex::decode_to_slice(hex, &mut out);
    out
}

/// `<dir>/sha256/<hex>.data`.
pub(crate) fn data_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join(SUBDIR).join(format!("{hex}.data"))
}

/// `<dir>/sha256/<hex>.meta`.
pub(crate) fn meta_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join(SUBDIR).join(format!("{hex}.meta"))
}

/// Where a user may drop a complete blob: `<dir>/sha256:<hex>` (upstream's naming) and
/// `<dir>/sha256/<hex>`.
pub(crate) fn sideload_paths(dir: &Path, hex: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("sha256:{hex}")),
        dir.join(SUBDIR).join(hex),
    ]
}

/// What a file in the cache directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// `sha256/<hex>.meta`.
    Meta(String),
    /// `sha256/<hex>.data`.
    Data(String),
    /// A side-loaded complete blob waiting to be verified.
    SideLoad(String),
    /// A rejected side-load (kept for the user to inspect; removed by `clear`).
    Rejected,
    /// The lock file.
    Lock,
    /// A file at the top level that is not part of the layout: never touched.
    Foreign,
    /// Anything else: temporary files, stray names (orphans).
    Other,
}

/// Every regular file of the layout under `dir`, classified. A missing directory is empty.
pub(crate) fn list(dir: &Path) -> Result<Vec<(PathBuf, Item)>> {
    let mut out = Vec::new();
    for (base, sub) in [(dir.to_path_buf(), false), (dir.join(SUBDIR), true)] {
        let rd = match std::fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list directory", e).with_path(&base)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list directory", e).with_path(&base))?;
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if !is_file {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let item = classify(&name, sub);
            out.push((entry.path(), item));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn classify(name: &str, sub: bool) -> Item {
    if name.ends_with(REJECTED) {
        return Item::Rejected;
    }
    if !sub {
        return match name.strip_prefix("sha256:") {
            Some(h) if is_hex64(h) => Item::SideLoad(h.to_string()),
            _ if name == LOCK_FILE => Item::Lock,
            // Files of the user's own at the top level are not ours to delete.
            _ => Item::Foreign,
        };
    }
    if is_hex64(name) {
        return Item::SideLoad(name.to_string());
    }
    match name.rsplit_once('.') {
        Some((h, "meta")) if is_hex64(h) => Item::Meta(h.to_string()),
        Some((h, "data")) if is_hex64(h) => Item::Data(h.to_string()),
        _ => Item::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_names() {
        let h = "ab".repeat(32);
        assert_eq!(parse_digest(&format!("sha256:{h}")).unwrap(), h);
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
        assert_eq!(classify(&format!("{h}.meta"), true), Item::Meta(h.clone()));
        assert_eq!(classify(&format!("{h}.data"), true), Item::Data(h.clone()));
        assert_eq!(classify(&h, true), Item::SideLoad(h.clone()));
        assert_eq!(
            classify(&format!("sha256:{h}"), false),
            Item::SideLoad(h.clone())
        );
        assert_eq!(classify(&format!("{h}.meta.tmp"), true), Item::Other);
        assert_eq!(classify("notes.txt", false), Item::Foreign);
        assert_eq!(classify(".lock", false), Item::Lock);
        assert_eq!(digest_bytes(&h)[0], 0xab);
    }
}
