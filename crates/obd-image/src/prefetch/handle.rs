//! The handle of a running prefetch (trace replay or file list): worker threads, counters,
//! stop and wait.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use obd_core::priority;

/// How long a background worker defers one read while demand reads are in flight, at most;
/// after that it goes ahead so that prefetch still progresses under a constant demand stream.
pub const DEMAND_YIELD_MAX: Duration = Duration::from_secs(1);
/// Granularity of waits, so that [`ReplayHandle::stop`] is prompt.
const TICK: Duration = Duration::from_millis(20);
/// Warnings logged for failed reads before they are only counted.
const MAX_WARNINGS: u64 = 10;

/// Counters of a prefetch. For a trace replay a "read" is one ≤ 1 MiB read of a layer; for a
/// file list it is one file read to its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Bytes read successfully (file content bytes for a file list).
    pub bytes: u64,
    /// Reads (files) completed.
    pub reads_done: u64,
    /// Reads (files) that failed; each was logged (the first few) and skipped.
    pub reads_failed: u64,
    /// Records or list entries skipped without reading (unknown layer, writes, out of range).
    pub skipped: u64,
    /// Whether every worker has exited (done, stopped or failed).
    pub finished: bool,
}

/// State shared by the handle and its workers.
pub(crate) struct Shared {
    stop: AtomicBool,
    bytes: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    live: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    what: String,
    started: Instant,
}

impl Shared {
    /// New state for a prefetch described by `what` (used in log lines).
    pub(crate) fn new(what: impl Into<String>) -> Arc<Self> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            what: what.into(),
            started: Instant::now(),
        })
    }

    /// Whether the prefetch was asked to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Count a successful read of `n` bytes.
    pub(crate) fn add_done(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Count bytes without completing a read (partial progress of a file).
    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a completed read without bytes.
    pub(crate) fn add_read(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Count `n` skipped records / entries.
    pub(crate) fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a failed read; returns whether it should still be logged as a warning.
    pub(crate) fn add_failed(&self) -> bool {
        self.failed.fetch_add(1, Ordering::Relaxed) < MAX_WARNINGS
    }

    /// Wait before a background read while demand reads are in flight (at most
    /// [`DEMAND_YIELD_MAX`]). Returns false if the prefetch was stopped meanwhile. Must be
    /// called holding no lock.
    pub(crate) fn yield_to_demand(&self) -> bool {
        let deadline = Instant::now() + DEMAND_YIELD_MAX;
        loop {
            if self.stopped() {
                return false;
            }
            if priority::wait_for_idle_demand(TICK) || Instant::now() >= deadline {
                return !self.stopped();
            }
        }
    }

    fn threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a background-marked worker thread running `f`. The last worker to exit logs a
    /// summary.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: String,
        f: impl FnOnce(&Arc<Shared>) + Send + 'static,
    ) {
        /// Counts a worker as live until dropped (also when the thread never starts).
        struct Live(Arc<Shared>);
        impl Drop for Live {
            fn drop(&mut self) {
                if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.log_summary();
                }
            }
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        let live = Live(self.clone());
        let run = move || {
            let live = live;
            priority::background(|| f(&live.0));
        };
        match std::thread::Builder::new().name(name).spawn(run) {
            Ok(h) => self.threads().push(h),
            Err(e) => {
                // The closure and its `Live` guard were dropped: the count is already undone.
                tracing::warn!("prefetch {}: cannot start a worker thread: {e}", self.what);
            }
        }
    }

    fn log_summary(&self) {
        let s = self.snapshot();
        tracing::info!(
            "prefetch {}: {} after {} ms: {} bytes, {} reads done, {} failed, {} skipped",
            self.what,
            if self.stopped() { "stopped" } else { "done" },
            self.started.elapsed().as_millis(),
            s.bytes,
            s.reads_done,
            s.reads_failed,
            s.skipped
        );
    }

    fn snapshot(&self) -> ReplayStats {
        // Read `live` first: once it is seen at 0, every worker's counts are visible.
        let finished = self.live.load(Ordering::Acquire) == 0;
        ReplayStats {
            bytes: self.bytes.load(Ordering::Relaxed),
            reads_done: self.done.load(Ordering::Relaxed),
            reads_failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            finished,
        }
    }
}

/// A running prefetch. Dropping it stops the workers and waits for them.
pub struct ReplayHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReplayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayHandle")
            .field("what", &self.shared.what)
            .field("progress", &self.progress())
            .finish()
    }
}

impl ReplayHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ReplayHandle { shared }
    }

    /// Ask the workers to stop after their current read (≤ 1 MiB). Does not wait.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Wait until every worker has exited (all work done, or stopped) and return the totals.
    pub fn wait(&self) -> ReplayStats {
        loop {
            // Workers may start more workers, so take them one at a time until none is left.
            let next = self.shared.threads().pop();
            match next {
                Some(h) => {
                    if h.join().is_err() {
                        tracing::warn!("prefetch {}: a worker panicked", self.shared.what);
                    }
                }
                None => break,
            }
        }
        self.shared.snapshot()
    }

    /// The counters so far, without waiting.
    pub fn progress(&self) -> ReplayStats {
        self.shared.snapshot()
    }
}

impl Drop for ReplayHandle {
    fn drop(&mut self) {
        self.stop();
        self.wait();
    }
}
