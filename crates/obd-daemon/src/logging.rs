//! Logging for the daemon: `tracing` to stderr and to the file named in the global config's
//! `logConfig`, rotated by size (`logSizeMB`, keeping `logRotateNum` old files as
//! `<file>.1`, `<file>.2`, …).
//!
//! The level comes from `logConfig.logLevel` (0 debug, 1 info, 2 warn, 3 error); the
//! environment variable `OBD_LOG` (a `tracing` filter such as `obd_nbd=debug,info`)
//! overrides it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// 0 debug, 1 info, 2 warn, 3 error.
    pub level: u32,
    /// Log file; `None` logs to stderr only.
    pub file: Option<PathBuf>,
    /// Rotate when the file passes this many bytes.
    pub max_bytes: u64,
    /// Old files kept.
    pub keep: usize,
}

fn level_name(level: u32) -> &'static str {
    match level {
        0 => "debug",
        1 => "info",
        2 => "warn",
        _ => "error",
    }
}

/// Check that the log file can be created and appended to (the rotation library panics
/// on a directory it cannot create, so failures are caught here first).
fn probe(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|_| ())
}

/// The size-rotated log file at `path` (created, with its directory, when missing).
fn rotating_file(path: &Path, settings: &LogSettings) -> std::io::Result<FileRotate<AppendCount>> {
    probe(path)?;
    let limit = usize::try_from(settings.max_bytes.max(4096)).unwrap_or(usize::MAX);
    Ok(FileRotate::new(
        path,
        AppendCount::new(settings.keep.max(1)),
        ContentLimit::BytesSurpassed(limit),
        Compression::None,
        None,
    ))
}

/// Install the global subscriber. Returns a warning to print when the log file cannot be
/// used (logging then goes to stderr only). Calling it twice is harmless.
pub fn init(settings: &LogSettings) -> Option<String> {
    let filter = std::env::var("OBD_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(level_name(settings.level)));
    let stderr = std::io::stderr;
    let mut problem = None;
    let file = settings
        .file
        .as_ref()
        .and_then(|p| match rotating_file(p, settings) {
            Ok(f) => Some(f),
            Err(e) => {
                problem = Some(format!(
                    "cannot log to {}: {e}; logging to stderr only",
                    p.display()
                ));
                None
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let res = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(stderr.and(Mutex::new(f)))
            .try_init(),
        None => builder.with_writer(stderr).try_init(),
    };
    drop(res);
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_unusable_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe(&dir.path().join("a/b/obd.log")).is_ok());
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        assert!(probe(&blocker.join("obd.log")).is_err());
    }

    #[test]
    fn rotates_by_size_and_keeps_the_configured_count() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/obd.log");
        let settings = LogSettings {
            level: 1,
            file: Some(path.clone()),
            max_bytes: 8192,
            keep: 2,
        };
        let mut f = rotating_file(&path, &settings).unwrap();
        let line = [b'x'; 1023];
        for _ in 0..64 {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.flush().unwrap();
        assert!(path.exists());
        let rotated = |n: u32| dir.path().join(format!("logs/obd.log.{n}"));
        assert!(
            rotated(1).exists() && rotated(2).exists(),
            "no rotation happened"
        );
        assert!(
            !rotated(3).exists(),
            "more than logRotateNum old files kept"
        );
        for p in [path.clone(), rotated(1), rotated(2)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 8192 + 1024, "{} is {len} bytes", p.display());
        }
    }

    #[test]
    fn levels() {
        assert_eq!(level_name(0), "debug");
        assert_eq!(level_name(1), "info");
        assert_eq!(level_name(2), "warn");
        assert_eq!(level_name(7), "error");
    }
}
