//! File-list prefetch: a text list of absolute paths whose files are read through the ext4
//! filesystem on the device, so that their blocks are fetched before the container needs
//! them.
//!
//! List format: one absolute path per line, at most [`MAX_LIST_BYTES`] in all. A trailing `/`
//! or `*` (`/usr/lib/`, `/usr/lib/*`, `/usr/lib*`) means "every file under this directory,
//! recursively". Blank lines and lines starting with `#` are ignored; surrounding whitespace
//! is trimmed.

use std::collections::HashSet;
use std::sync::Arc;

use obd_core::{Error, ReadAt, Result};

use super::ext4walk;
use super::handle::{ReplayHandle, Shared};
use super::replay::MAX_CONCURRENCY;

/// Largest accepted list (upstream's limit).
pub const MAX_LIST_BYTES: usize = 64 * 1024;

/// Parse a prefetch list. Entries to walk as directories come back with a trailing `/`
/// (`/usr/lib*` and `/usr/lib/*` become `/usr/lib/`); repeats are dropped. Errors name the
/// 1-based line.
pub fn parse_list(text: &str) -> Result<Vec<String>> {
    if text.len() > MAX_LIST_BYTES {
        return Err(Error::invalid_input(format!(
            "prefetch list is {} bytes, more than the {MAX_LIST_BYTES}-byte limit",
            text.len()
        )));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |why: &str| Error::invalid_input(format!("prefetch list line {n}: {why}: {line:?}"));
        if !line.starts_with('/') {
            return Err(bad("not an absolute path"));
        }
        if line.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let (base, walk) = match line.strip_suffix('*') {
            Some(b) => (b, true),
            None => (line, line.ends_with('/')),
        };
        if base.contains('*') || base.contains('?') || base.contains('[') {
            return Err(bad(
                "wildcards are not supported (only a trailing `/` or `*` to walk a directory)",
            ));
        }
        if base.split('/').any(|c| c.len() > 255) {
            return Err(bad("a path component is longer than 255 bytes"));
        }
        let trimmed = base.trim_end_matches('/');
        let entry = if walk || trimmed.is_empty() {
            format!("{trimmed}/")
        } else {
            trimmed.to_string()
        };
        if seen.insert(entry.clone()) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Read every file of `paths` (as returned by [`parse_list`]; entries ending in `/` are
/// walked recursively) through the ext4 filesystem on `device`, with `concurrency`
/// background workers (0 means 1).
///
/// The filesystem is opened in user space (no mount). If `device` does not hold ext4, one
/// warning is logged and the handle finishes with 0 bytes. Missing paths and unreadable
/// files are logged and skipped. In the stats a "read" is one whole file and `bytes` counts
/// file content; symlinks met while walking are not followed.
pub fn prefetch_files(
    device: Arc<dyn ReadAt>,
    paths: Vec<String>,
    concurrency: usize,
) -> ReplayHandle {
    let shared = Shared::new(format!("of {} listed paths", paths.len()));
    let workers = concurrency.clamp(1, MAX_CONCURRENCY);
    shared.spawn("obd-prefetch-0".into(), move |sh| {
        ext4walk::lead(sh, device, paths, workers);
    });
    ReplayHandle::new(shared)
}
