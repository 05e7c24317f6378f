//! Runtime plumbing: blocking helpers callable from async tests, and owned tokio runtimes.

use std::time::Duration;

/// Runs `f` on the current thread, or on a scoped helper thread when called from inside a
/// tokio runtime (the reqwest blocking client panics there).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A small multi-thread runtime owned by a server object; shut down on drop.
pub(crate) struct OwnedRuntime {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl OwnedRuntime {
    pub(crate) fn new(name: &str) -> OwnedRuntime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("obd-testkit-{name}"))
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("obd-testkit: cannot build a tokio runtime: {e}"));
        OwnedRuntime {
            handle: rt.handle().clone(),
            rt: Some(rt),
        }
    }

    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking is not allowed inside an async context.
                rt.shutdown_background();
            } else {
                // Wait so the listening socket is closed when drop returns.
                rt.shutdown_timeout(Duration::from_secs(5));
            }
        }
    }
}
