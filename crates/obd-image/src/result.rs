//! The per-device result file the snapshotter waits on: `success` or `failed:<reason>`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `success` (on `Ok`) or `failed:<reason>` (the error's one-line text) to
/// `result_file`, atomically: a temporary file in the same directory is written, synced and
/// renamed over it, so a reader never sees a partial line. Callers skip this when the config
/// has no `resultFile`.
pub fn write_result(
    result_file: &Path,
    outcome: Result<(), &obd_core::Error>,
) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let text = match outcome {
        Ok(()) => "success".to_string(),
        Err(e) => format!("failed:{}", e.to_string().replace(['\n', '\r'], " ")),
    };
    let name = result_file.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("result file {} has no file name", result_file.display()),
        )
    })?;
    let tmp = result_file.with_file_name(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, result_file)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
