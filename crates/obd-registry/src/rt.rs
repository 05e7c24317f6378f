//! A privately owned tokio runtime and the sync→async bridge used by the blocking APIs.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// A multi-threaded runtime that shuts down without blocking when dropped, so dropping it
/// from inside another runtime (or from one of its own tasks) cannot panic.
pub(crate) struct OwnedRuntime {
    rt: Option<Runtime>,
    handle: Handle,
}

impl OwnedRuntime {
    /// A runtime with `threads` workers named `name`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(16)
            .thread_name(name)
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(OwnedRuntime {
            rt: Some(rt),
            handle,
        })
    }

    /// The runtime's handle, for spawning.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `fut` on this runtime and wait for its result from the calling thread, at most
    /// `limit`. Works from any thread — including a worker or blocking thread of another
    /// runtime — because it waits on a std channel instead of `block_on`. `None` when the
    /// wait timed out (the task is then aborted) or the runtime is shutting down.
    pub fn run<T, F>(&self, fut: F, limit: Duration) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let _abort = AbortOnDrop(vec![task]);
        rx.recv_timeout(limit).ok()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts spawned tasks when the waiting caller gives up (or returns early on an error).
pub(crate) struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_works_inside_other_runtimes_and_drops_cleanly() {
        let own = std::sync::Arc::new(OwnedRuntime::new(1, "obd-test").unwrap());
        assert_eq!(own.run(async { 7 }, Duration::from_secs(5)), Some(7));
        // From a worker of another runtime and from its blocking pool.
        let outer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let o2 = own.clone();
        let v = outer.block_on(async move {
            let a = o2.run(async { 1 }, Duration::from_secs(5));
            let o3 = o2.clone();
            let b =
                tokio::task::spawn_blocking(move || o3.run(async { 2 }, Duration::from_secs(5)))
                    .await
                    .unwrap();
            // Dropping the last reference inside a runtime must not panic.
            drop(o2);
            (a, b)
        });
        assert_eq!(v, (Some(1), Some(2)));
        // A wait that exceeds its limit returns None instead of hanging.
        let slow = own.run(
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
            },
            Duration::from_millis(50),
        );
        assert!(slow.is_none());
        outer.block_on(async move { drop(own) });
    }
}
