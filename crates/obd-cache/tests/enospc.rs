//! A full file system under the cache: reads keep working, one warning, caching resumes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use obd_core::ReadAt;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn tiny_tmpfs(dir: &Path) -> Option<Mount> {
    if !rustix_is_root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return None;
    }
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: cannot mount a tmpfs (no CAP_SYS_ADMIN?)");
        return None;
    }
    Some(Mount(dir.to_path_buf()))
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn enospc_serves_from_memory_warns_once_and_resumes_after_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mount) = tiny_tmpfs(tmp.path()) else {
        return;
    };
    let log = Log::default();
    let l2 = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || l2.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let errors0 = metric("obd_errors_total{kind=\"cache_enospc\"}");
        let cache = open(tmp.path(), 64 << 20, 65536);
        let data = random_bytes(4 << 20, 120);
        let src = TestSource::new(data.clone());
        let blob = cache.blob(&fake_digest(120), src.clone()).unwrap();
        for round in 0..3 {
            for off in (0..data.len()).step_by(65536) {
                let got = blob.read_vec(off as u64, 65536).unwrap();
                assert!(got == data[off..off + 65536], "round {round} at {off}");
            }
        }
        let cached = blob.cached_bytes();
        assert!(cached > 0 && cached < 1 << 20, "cached {cached}");
        assert!(metric("obd_errors_total{kind=\"cache_enospc\"}") > errors0);
        // A blob opened while the disk is full works too.
        let other = random_bytes(300_000, 121);
        let b2 = cache
            .blob(&fake_digest(121), TestSource::new(other.clone()))
            .unwrap();
        assert!(b2.read_vec(0, other.len()).unwrap() == other);
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let warns = text
            .lines()
            .filter(|l| l.contains("cannot write to the blob cache"))
            .count();
        assert_eq!(warns, 1, "log:\n{text}");
        // Freeing space lets caching resume at once.
        cache.clear().unwrap();
        assert_eq!(blob.read_vec(0, 65536).unwrap(), &data[..65536]);
        assert_eq!(
            blob.cached_bytes(),
            65536,
            "caching did not resume after the eviction"
        );
        let reads = src.reads();
        assert_eq!(blob.read_vec(0, 65536).unwrap(), &data[..65536]);
        assert_eq!(src.reads(), reads);
        drop((blob, b2, cache));
    });
}
