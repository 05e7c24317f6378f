//! Trace recording: every successful read of every wrapped layer is remembered, and written as
//! a trace file when recording stops.
//!
//! Like upstream: `<trace>.lock` is created at start; recording stops when it is deleted
//! (polled every second) or when [`TraceRecorder::finish`] is called (device close, or the last
//! reference dropped). The trace is then written to `<trace>` (atomically: a temporary file
//! renamed over it), `<trace>.lock` is removed and `<trace>.ok` created.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use obd_core::{Error, ErrorKind, ReadAt, Result};

use super::trace::{MAX_RECORD_COUNT, TraceRecord, encode};

/// Most records kept in memory (a 24 MiB trace; with the duplicate index about 64 MiB of
/// memory at most); recording stops with a warning beyond.
pub const MAX_RECORDS: usize = 1 << 20;
/// How often the lock file is checked.
pub const LOCK_POLL: Duration = Duration::from_secs(1);

/// `<path><suffix>`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

#[derive(Default)]
struct Log {
    records: Vec<TraceRecord>,
    /// Index in `records` of each layer's latest record, to merge sequential reads.
    last: HashMap<u32, usize>,
    /// Records already present, to drop exact repeats.
    seen: HashSet<(u32, i64, u64)>,
    stopped: bool,
}

/// What [`TraceRecorder::finish`] returned the first time.
enum Outcome {
    Written(usize),
    Failed(ErrorKind, String),
}

/// Records the reads of a device's layers into a trace file. See the module docs.
pub struct TraceRecorder {
    path: PathBuf,
    lock_path: PathBuf,
    ok_path: PathBuf,
    log: Mutex<Log>,
    /// Mirrors `log.stopped`, so that reads after the recording cost no lock.
    stopped: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
    /// Set when recording stops, to wake the lock poller.
    stop: Arc<(Mutex<bool>, Condvar)>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for TraceRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceRecorder")
            .field("path", &self.path)
            .field("records", &self.lock_log().records.len())
            .finish()
    }
}

impl TraceRecorder {
    /// Start recording into `path`: create `<path>.lock` (and remove a stale `<path>.ok`),
    /// and start the thread that stops recording when the lock file is deleted.
    pub fn start(path: &Path) -> Result<Arc<TraceRecorder>> {
        let lock_path = with_suffix(path, ".lock");
        let ok_path = with_suffix(path, ".ok");
        match std::fs::remove_file(&ok_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove stale ok file", e).with_path(&ok_path)),
        }
        std::fs::File::create(&lock_path)
            .map_err(|e| Error::io("create trace lock file", e).with_path(&lock_path))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let rec = Arc::new(TraceRecorder {
            path: path.to_path_buf(),
            lock_path,
            ok_path,
            log: Mutex::new(Log::default()),
            stopped: AtomicBool::new(false),
            outcome: Mutex::new(None),
            stop: stop.clone(),
            poller: Mutex::new(None),
        });
        let weak = Arc::downgrade(&rec);
        let lock = rec.lock_path.clone();
        let handle = std::thread::Builder::new()
            .name("obd-trace-lock".into())
            .spawn(move || poll_lock(&lock, &stop, &weak))
            .map_err(|e| Error::io("start trace lock poller", e).with_path(path))?;
        *rec.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        tracing::info!(
            "prefetch: recording a trace into {}; delete {} to stop",
            path.display(),
            rec.lock_path.display()
        );
        Ok(rec)
    }

    /// The trace file this recorder writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records kept so far.
    pub fn len(&self) -> usize {
        self.lock_log().records.len()
    }

    /// Whether no record was kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether recording has stopped (lock deleted, finished or memory cap reached).
    pub fn is_stopped(&self) -> bool {
        self.lock_log().stopped
    }

    /// Wrap layer `layer_index` so that its successful reads are recorded.
    pub fn wrap(self: &Arc<Self>, layer_index: u32, inner: Arc<dyn ReadAt>) -> Arc<dyn ReadAt> {
        Arc::new(Recording {
            rec: self.clone(),
            layer_index,
            inner,
        })
    }

    fn lock_log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember a successful read of `len` bytes at `offset` of layer `layer`.
    fn record(&self, layer: u32, offset: u64, len: u64) {
        let (Ok(offset), true) = (i64::try_from(offset), len > 0) else {
            return;
        };
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut log = self.lock_log();
        if log.stopped {
            return;
        }
        if let Some(&i) = log.last.get(&layer)
            && let Some(last) = log.records.get_mut(i)
        {
            let end = last
                .offset
                .saturating_add(i64::try_from(last.count).unwrap_or(i64::MAX));
            let new_end = offset.saturating_add(i64::try_from(len).unwrap_or(i64::MAX));
            // Inside the previous read of this layer: nothing new.
            if offset >= last.offset && new_end <= end {
                return;
            }
            // Continues it: extend, keeping records replayable by upstream (≤ 1 MiB).
            if offset == end && last.count.saturating_add(len) <= MAX_RECORD_COUNT {
                last.count += len;
                return;
            }
        }
        if !log.seen.insert((layer, offset, len)) {
            return;
        }
        if log.records.len() >= MAX_RECORDS {
            log.stopped = true;
            self.stopped.store(true, Ordering::Relaxed);
            tracing::warn!(
                "prefetch: trace {} reached {MAX_RECORDS} records; recording stops here",
                self.path.display()
            );
            return;
        }
        let i = log.records.len();
        log.records.push(TraceRecord::read(layer, offset, len));
        log.last.insert(layer, i);
    }

    /// Stop recording and write the trace (first call only; later calls return the first
    /// result). Returns the number of records written.
    pub fn finish(&self) -> Result<usize> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if outcome.is_none() {
            let records = {
                let mut log = self.lock_log();
                log.stopped = true;
                self.stopped.store(true, Ordering::Relaxed);
                log.seen = HashSet::new();
                log.last = HashMap::new();
                std::mem::take(&mut log.records)
            };
            *outcome = Some(match self.dump(&records) {
                Ok(()) => {
                    tracing::info!(
                        "prefetch: wrote {} trace records to {}",
                        records.len(),
                        self.path.display()
                    );
                    Outcome::Written(records.len())
                }
                Err(e) => {
                    tracing::warn!("prefetch: writing the trace failed: {e}");
                    Outcome::Failed(e.kind(), e.to_string())
                }
            });
        }
        drop(outcome);
        self.stop_poller();
        match self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(Outcome::Written(n)) => Ok(*n),
            Some(Outcome::Failed(kind, msg)) => Err(Error::new(*kind, msg.clone())),
            None => Err(Error::new(ErrorKind::Io, "trace recorder has no outcome")),
        }
    }

    fn stop_poller(&self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        let handle = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // finish() may run on the poller itself (lock deleted): it must not join itself.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Write `records` to a temporary file next to the trace, rename it over the trace,
    /// then remove the lock file and create the ok file.
    fn dump(&self, records: &[TraceRecord]) -> Result<()> {
        let bytes = encode(records);
        let tmp = with_suffix(&self.path, &format!(".tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("write trace", e).with_path(&tmp));
        }
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("rename trace into place", e).with_path(&self.path));
        }
        match std::fs::remove_file(&self.lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove trace lock file", e).with_path(&self.lock_path)),
        }
        std::fs::File::create(&self.ok_path)
            .map_err(|e| Error::io("create trace ok file", e).with_path(&self.ok_path))?;
        Ok(())
    }
}

impl Drop for TraceRecorder {
    fn drop(&mut self) {
        // The device closed without an explicit finish: dump now, like upstream's destructor.
        let _ = self.finish();
    }
}

/// The lock poller: every [`LOCK_POLL`], stop recording if the lock file is gone.
fn poll_lock(lock: &Path, stop: &(Mutex<bool>, Condvar), rec: &Weak<TraceRecorder>) {
    let (flag, cv) = stop;
    let mut stopped = flag.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if *stopped {
            return;
        }
        stopped = cv
            .wait_timeout(stopped, LOCK_POLL)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        if *stopped {
            return;
        }
        if !lock.exists() {
            drop(stopped);
            tracing::info!("prefetch: {} was deleted; recording stops", lock.display());
            if let Some(rec) = rec.upgrade() {
                let _ = rec.finish();
            }
            return;
        }
    }
}

/// A layer whose successful reads are recorded.
struct Recording {
    rec: Arc<TraceRecorder>,
    layer_index: u32,
    inner: Arc<dyn ReadAt>,
}

impl ReadAt for Recording {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_exact_at(buf, offset)?;
        self.rec.record(self.layer_index, offset, buf.len() as u64);
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        self.inner.path()
    }

    // `file_region` is deliberately not forwarded: a bulk copy through it would bypass the
    // recording.
}
