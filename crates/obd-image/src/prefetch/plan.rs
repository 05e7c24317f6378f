//! Deciding what to do with a device's `recordTracePath`, like upstream's `new_prefetcher`:
//!
//! | the file | plan |
//! |---|---|
//! | not set | [`Plan::None`] |
//! | missing | [`Plan::None`], with a warning |
//! | 0 bytes | [`Plan::Record`] into it |
//! | starts with the trace magic | [`Plan::Replay`] of its records (must decode cleanly) |
//! | anything else | [`Plan::FileList`] (UTF-8 text, see [`super::parse_list`]) |

use std::io::Read;
use std::path::{Path, PathBuf};

use obd_core::{Error, Result, ResultExt};

use super::filelist::{MAX_LIST_BYTES, parse_list};
use super::trace::{HEADER_SIZE, RECORD_SIZE, decode, has_magic};
use crate::config::Loaded;

/// Largest trace file read (4 Mi records); a larger file is refused, not read into memory.
pub const MAX_TRACE_BYTES: u64 = (HEADER_SIZE + RECORD_SIZE * (4 << 20)) as u64;

/// What to do for a device's prefetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Record a trace into this (empty) file: see [`super::TraceRecorder::start`].
    Record(PathBuf),
    /// Replay these records: see [`super::replay()`].
    Replay(Vec<super::TraceRecord>),
    /// Read these files (a trailing `/` means walk): see [`super::prefetch_files`].
    FileList(Vec<String>),
    /// Nothing to do.
    None,
}

/// Decide the plan for `record_trace_path`. A missing file gives [`Plan::None`] and a
/// warning; a file that cannot be read, a corrupt trace or a bad list is an error naming the
/// file (and the offset or line).
pub fn plan(record_trace_path: Option<&Path>) -> Result<Loaded<Plan>> {
    let loaded = |value| Loaded {
        value,
        warnings: Vec::new(),
    };
    let Some(path) = record_trace_path else {
        return Ok(loaded(Plan::None));
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                value: Plan::None,
                warnings: vec![format!(
                    "{}: recordTracePath: the file does not exist; no trace is recorded or \
                     replayed (create it empty to record)",
                    path.display()
                )],
            });
        }
        Err(e) => return Err(Error::io("stat", e).with_path(path)),
    };
    if !meta.is_file() {
        return Err(Error::invalid_input(
            "recordTracePath is not a regular file (a trace, a file list or an empty file)",
        )
        .with_path(path));
    }
    if meta.len() == 0 {
        return Ok(loaded(Plan::Record(path.to_path_buf())));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", e).with_path(path))?;
    let mut head = Vec::new();
    (&mut file)
        .take(4)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read", e).with_path(path))?;
    let limit = if has_magic(&head) {
        MAX_TRACE_BYTES
    } else {
        MAX_LIST_BYTES as u64
    };
    if meta.len() > limit {
        return Err(Error::invalid_input(format!(
            "{} bytes is more than the {limit}-byte limit for a {}",
            meta.len(),
            if has_magic(&head) {
                "trace"
            } else {
                "prefetch list"
            }
        ))
        .with_path(path));
    }
    let mut bytes = head;
    file.take(limit + 1 - bytes.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", e).with_path(path))?;
    plan_from_bytes(&bytes).with_path(path).map(loaded)
}

/// The plan for the bytes of a trace or list (the `trace` file of an acceleration layer, or
/// a `recordTracePath` already read): empty → record is impossible here, so an error;
/// trace magic → replay; else a file list.
pub fn plan_from_bytes(bytes: &[u8]) -> Result<Plan> {
    if bytes.is_empty() {
        return Err(Error::invalid_input(
            "empty trace: nothing to replay (an empty recordTracePath file means record)",
        ));
    }
    if has_magic(bytes) {
        return decode(bytes).map(Plan::Replay);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid_input(format!(
            "neither a binary trace (no trace magic) nor a UTF-8 prefetch list: {e}"
        ))
        .at_offset(e.valid_up_to() as u64)
    })?;
    parse_list(text).map(Plan::FileList)
}
