//! Demand reads before background reads.
//!
//! Reads a user is waiting for ("demand") must never queue behind reads the service makes on
//! its own (background download, trace replay, file-list prefetch). The rule is enforced
//! where a read would go to the network:
//!
//! ```text
//!   demand read  ── DemandGuard (counts in flight) ──> fetch
//!   background   ── wait_for_idle_demand() ─────────> fetch     (only while holding nothing)
//! ```
//!
//! A thread marks itself as background with [`background`]; code below asks
//! [`is_background`]. Background waiters must not hold a lock or a single-flight slot a demand
//! reader could wait on, or the two would wait for each other.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static DEMAND_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static IDLE: Mutex<()> = Mutex::new(());
static IDLE_CV: Condvar = Condvar::new();

thread_local! {
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with this thread marked as background work.
pub fn background<R>(f: impl FnOnce() -> R) -> R {
    let was = BACKGROUND.with(|b| b.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BACKGROUND.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(was);
    f()
}

/// Whether the current thread runs background work (see [`background`]).
pub fn is_background() -> bool {
    BACKGROUND.with(|b| b.get())
}

/// Demand reads in flight now.
pub fn demand_in_flight() -> usize {
    DEMAND_IN_FLIGHT.load(Ordering::Acquire)
}

/// Counts one demand read as in flight until dropped.
#[derive(Debug)]
#[must_use = "the read counts as in flight only while the guard lives"]
pub struct DemandGuard(());

impl DemandGuard {
    /// Start counting a demand read.
    pub fn new() -> Self {
        DEMAND_IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        DemandGuard(())
    }
}

impl Default for DemandGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        if DEMAND_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _g = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            IDLE_CV.notify_all();
        }
    }
}

/// A guard for a network read on this thread: counts it as demand unless the thread is
/// background (then nothing is counted).
pub fn demand_guard_unless_background() -> Option<DemandGuard> {
    (!is_background()).then(DemandGuard::new)
}

/// Block until no demand read is in flight, or `max_wait` has passed (so background work
/// still makes progress under a constant demand stream). Returns whether demand was idle.
pub fn wait_for_idle_demand(max_wait: Duration) -> bool {
    let deadline = Instant::now() + max_wait;
    let mut g = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if demand_in_flight() == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        g = IDLE_CV
            .wait_timeout(g, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn background_mark_is_scoped_to_the_thread() {
        assert!(!is_background());
        background(|| {
            assert!(is_background());
            std::thread::spawn(|| assert!(!is_background()))
                .join()
                .unwrap();
            assert!(demand_guard_unless_background().is_none());
        });
        assert!(!is_background());
    }

    #[test]
    fn background_waits_for_demand_to_finish() {
        let g = DemandGuard::new();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let t = std::thread::spawn(move || {
            let idle = wait_for_idle_demand(Duration::from_secs(30));
            d2.store(true, Ordering::SeqCst);
            idle
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst), "background ran during demand");
        drop(g);
        assert!(t.join().unwrap());
        // A bounded wait returns false when demand never ends.
        let _g = DemandGuard::new();
        assert!(!wait_for_idle_demand(Duration::from_millis(20)));
    }
}
