//! Helpers for the prefetch tests: a counting [`ReadAt`] wrapper around real devices, random
//! layer files, and a process-wide capture of `tracing` warnings (workers log from their own
//! threads, so a thread-local subscriber would miss them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use obd_core::{FileDevice, ReadAt, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One read seen by a [`Counting`] wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub offset: u64,
    pub len: u64,
    /// Whether the reading thread was marked as background work.
    pub background: bool,
}

/// Forwards to `inner` and remembers every read; optionally slows each read down.
pub struct Counting {
    pub inner: Arc<dyn ReadAt>,
    pub seen: Mutex<Vec<Seen>>,
    pub delay: Duration,
}

impl Counting {
    pub fn new(inner: Arc<dyn ReadAt>) -> Arc<Self> {
        Self::slow(inner, Duration::ZERO)
    }

    pub fn slow(inner: Arc<dyn ReadAt>, delay: Duration) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            seen: Mutex::new(Vec::new()),
            delay,
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The byte ranges read, sorted and merged.
    pub fn covered(&self) -> Vec<(u64, u64)> {
        merge(
            self.seen()
                .iter()
                .map(|s| (s.offset, s.offset + s.len))
                .collect(),
        )
    }
}

impl ReadAt for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.inner.read_exact_at(buf, offset)?;
        self.seen.lock().unwrap().push(Seen {
            offset,
            len: buf.len() as u64,
            background: obd_core::priority::is_background(),
        });
        Ok(())
    }
    fn path(&self) -> Option<&Path> {
        self.inner.path()
    }
}

/// Sort and merge overlapping or touching `[start, end)` ranges.
pub fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|r| r.1 > r.0);
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether the merged ranges `covered` include all of `[start, end)`.
pub fn covers(covered: &[(u64, u64)], start: u64, end: u64) -> bool {
    covered.iter().any(|&(s, e)| s <= start && end <= e)
}

/// A file of `size` seeded random bytes in `dir`, opened as a [`FileDevice`].
pub fn random_layer(
    dir: &Path,
    name: &str,
    size: usize,
    seed: u64,
) -> (PathBuf, Vec<u8>, Arc<dyn ReadAt>) {
    let mut data = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill(&mut data[..]);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    let dev: Arc<dyn ReadAt> = Arc::new(FileDevice::open(&path).unwrap());
    (path, data, dev)
}

/// Every `tracing` event message of this process, as `LEVEL message field=value...`.
pub fn logs() -> Vec<String> {
    capture().lock().unwrap().clone()
}

/// Install the capturing subscriber (once per test binary).
pub fn capture() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<&'static Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<String>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing::subscriber::set_global_default(Capture(logs));
        logs
    })
}

struct Capture(&'static Mutex<Vec<String>>);

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!(" {value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut t = Text(event.metadata().level().to_string());
        event.record(&mut t);
        self.0.lock().unwrap().push(t.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
