//! Background download (`download` config): after `delay` + a random part of `delayExtra`
//! seconds, fetch the whole blob into `dir/.download` at ≤ `maxMBps`, verify its SHA-256
//! against the digest, rename it to `dir/overlaybd.commit` and switch the layer to it live.
//!
//! Reads run as background work ([`obd_core::priority`]): a device read waiting on the
//! registry always goes first. Ranges the cache already holds are copied from it. A failed
//! attempt resumes where it stopped; a digest mismatch starts over. After `tryCnt` attempts
//! the layer stays remote and the status says why. When the last device using the layer
//! goes away, the download stops (the partial file is kept and resumed next time).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use obd_core::{Error, ErrorKind, FileDevice, ReadAt, Result};
use obd_metrics::Metrics;
use sha2::{Digest, Sha256};

use super::layer::RemoteLayer;
use super::lock;
use crate::config::global::DownloadConfig;

/// The in-progress file name in the layer directory (upstream's name).
pub const PARTIAL_NAME: &str = ".download";
/// The finished file name in the layer directory.
pub const DONE_NAME: &str = "overlaybd.commit";

/// Where one layer's background download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadState {
    /// Waiting for the start delay.
    Waiting,
    /// Fetching.
    Running,
    /// Verified and switched to the local file.
    Done,
    /// Every attempt failed (see the error).
    Failed,
    /// The layer was closed before the download finished.
    Stopped,
}

impl DownloadState {
    /// Lower-case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadState::Waiting => "waiting",
            DownloadState::Running => "running",
            DownloadState::Done => "done",
            DownloadState::Failed => "failed",
            DownloadState::Stopped => "stopped",
        }
    }
}

/// Progress of one download.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) state: DownloadState,
    pub(crate) done: u64,
    pub(crate) attempts: u32,
    pub(crate) error: Option<String>,
}

type Shared = Arc<Mutex<Status>>;

/// Every download of one source, by digest.
#[derive(Default)]
pub(crate) struct Downloads {
    tasks: Mutex<HashMap<String, Shared>>,
}

impl Downloads {
    /// Start downloading `layer` into `dir` unless a download of it is already going.
    pub(crate) fn start(&self, layer: &Arc<RemoteLayer>, dir: &Path, cfg: &DownloadConfig) {
        let status = {
            let mut tasks = lock(&self.tasks);
            if let Some(s) = tasks.get(layer.digest()) {
                let st = lock(s).state;
                if matches!(
                    st,
                    DownloadState::Waiting | DownloadState::Running | DownloadState::Done
                ) {
                    return;
                }
            }
            let s = Arc::new(Mutex::new(Status {
                state: DownloadState::Waiting,
                done: 0,
                attempts: 0,
                error: None,
            }));
            tasks.insert(layer.digest().to_string(), s.clone());
            s
        };
        let task = Task {
            layer: Arc::downgrade(layer),
            digest: layer.digest().to_string(),
            size: layer.size(),
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            status,
        };
        let spawned = std::thread::Builder::new()
            .name("obd-download".into())
            .spawn(move || task.run());
        if let Err(e) = spawned {
            tracing::warn!(
                digest = layer.digest(),
                "cannot start background download: {e}"
            );
        }
    }

    /// The status of `digest`'s download, if one was started.
    pub(crate) fn status(&self, digest: &str) -> Option<Status> {
        lock(&self.tasks).get(digest).map(|s| lock(s).clone())
    }
}

struct Task {
    layer: Weak<RemoteLayer>,
    digest: String,
    size: u64,
    dir: PathBuf,
    cfg: DownloadConfig,
    status: Shared,
}

/// Why one attempt ended.
enum Stop {
    /// The layer was closed.
    Gone,
    /// The bytes did not hash to the digest: start over next time.
    Mismatch(String),
    /// Anything else: resume next time.
    Failed(Error),
}

impl Task {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    fn alive(&self) -> bool {
        self.layer.strong_count() > 0
    }

    /// Sleep `d`, waking early to notice a closed layer. False when the layer is gone.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if !self.alive() {
                return false;
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
        }
        self.alive()
    }

    fn run(self) {
        let extra = match self.cfg.delay_extra {
            0 => 0,
            n => rand::random_range(0..=u64::from(n)),
        };
        if !self.sleep(Duration::from_secs(u64::from(self.cfg.delay) + extra)) {
            return self.set(|s| s.state = DownloadState::Stopped);
        }
        let mut restart = false;
        for attempt in 1..=self.cfg.try_cnt.max(1) {
            self.set(|s| {
                s.state = DownloadState::Running;
                s.attempts = attempt;
            });
            let stop = match self.attempt(restart) {
                Ok(()) => {
                    self.set(|s| {
                        s.state = DownloadState::Done;
                        s.error = None;
                    });
                    Metrics::global()
                        .download_completed
                        .get_or_create(&vec![("layer", self.digest.clone())])
                        .inc();
                    tracing::info!(
                        digest = %self.digest,
                        dir = %self.dir.display(),
                        "background download verified; layer now reads from {DONE_NAME}"
                    );
                    return;
                }
                Err(s) => s,
            };
            let msg = match stop {
                Stop::Gone => return self.set(|s| s.state = DownloadState::Stopped),
                Stop::Mismatch(m) => {
                    restart = true;
                    m
                }
                Stop::Failed(e) => {
                    restart = false;
                    e.to_string()
                }
            };
            Metrics::global().add_error("download");
            tracing::warn!(
                digest = %self.digest,
                attempt,
                tries = self.cfg.try_cnt,
                "background download failed: {msg}"
            );
            self.set(|s| s.error = Some(msg));
            if !self.sleep(Duration::from_secs(u64::from(attempt))) {
                return self.set(|s| s.state = DownloadState::Stopped);
            }
        }
        self.set(|s| s.state = DownloadState::Failed);
    }

    fn attempt(&self, restart: bool) -> std::result::Result<(), Stop> {
        let fail = Stop::Failed;
        let partial = self.dir.join(PARTIAL_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&partial)
            .map_err(|e| fail(Error::io("create", e).with_path(&partial)))?;
        let have = file
            .metadata()
            .map_err(|e| fail(Error::io("stat", e).with_path(&partial)))?
            .len();
        let mut offset = if restart || have > self.size { 0 } else { have };
        let resumed_at = offset;
        file.set_len(offset)
            .map_err(|e| fail(Error::io("truncate", e).with_path(&partial)))?;
        let mut hasher = Sha256::new();
        hash_prefix(&file, offset, &mut hasher)
            .map_err(|e| fail(Error::io("read", e).with_path(&partial)))?;
        let bs = u64::from(self.cfg.block_size.max(4096));
        let mut buf = vec![0u8; usize::try_from(bs).unwrap_or(1 << 20)];
        let pace = Pace::new(self.cfg.max_mbps);
        while offset < self.size {
            let n = usize::try_from(bs.min(self.size - offset)).unwrap_or(buf.len());
            let chunk = &mut buf[..n];
            let layer = self.layer.upgrade().ok_or(Stop::Gone)?;
            obd_core::priority::background(|| read_chunk(&layer, chunk, offset)).map_err(fail)?;
            drop(layer);
            file.write_all_at(chunk, offset)
                .map_err(|e| fail(Error::io("write", e).with_path(&partial).at_offset(offset)))?;
            hasher.update(&*chunk);
            offset += n as u64;
            self.set(|s| s.done = offset);
            Metrics::global().set_download(&self.digest, offset, self.size);
            pace.wait(offset - resumed_at);
        }
        file.sync_all()
            .map_err(|e| fail(Error::io("fsync", e).with_path(&partial)))?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != self.digest {
            let _ = file.set_len(0);
            return Err(Stop::Mismatch(format!(
                "{}: downloaded bytes hash to {got}, not {}; refused",
                partial.display(),
                self.digest
            )));
        }
        let done = self.dir.join(DONE_NAME);
        std::fs::rename(&partial, &done)
            .map_err(|e| fail(Error::io("rename", e).with_path(&done)))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let local = FileDevice::open(&done).map_err(fail)?;
        if local.size() != self.size {
            return Err(fail(Error::new(
                ErrorKind::Corrupt,
                format!("{} changed size after download", done.display()),
            )));
        }
        let layer = self.layer.upgrade().ok_or(Stop::Gone)?;
        layer.switch_to(Arc::new(local), done);
        Ok(())
    }
}

/// One chunk: from the cache when it holds the range, else from the registry.
fn read_chunk(layer: &RemoteLayer, buf: &mut [u8], offset: u64) -> Result<()> {
    if let Some(c) = layer.cached()
        && c.read_cached(buf, offset)?
    {
        return Ok(());
    }
    layer.remote().read_exact_at(buf, offset)
}

/// Feed the first `len` bytes of `file` (a resumed partial download) to `hasher`.
fn hash_prefix(file: &File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut r = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// Keeps the average rate at or under `maxMBps` (0 = unlimited).
struct Pace {
    start: Instant,
    bytes_per_sec: u64,
}

impl Pace {
    fn new(max_mbps: u32) -> Pace {
        Pace {
            start: Instant::now(),
            bytes_per_sec: u64::from(max_mbps) << 20,
        }
    }

    /// After `done` bytes in this attempt, sleep until the rate is back under the limit.
    fn wait(&self, done: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.bytes_per_sec as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}
