//! Trace replay: worker threads re-issue a recorded trace's reads against the layers, so that
//! the layers' caches hold the data before the container asks for it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use obd_core::ReadAt;

use super::handle::{ReplayHandle, Shared};
use super::trace::{MAX_RECORD_COUNT, TraceOp, TraceRecord};

/// Default number of replay workers (`prefetchConfig.concurrency`).
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Upper bound on workers, whatever the configuration says.
pub const MAX_CONCURRENCY: usize = 256;

/// One read still to do: `len` bytes at `offset` of layer `layer`.
#[derive(Debug, Clone, Copy)]
struct Span {
    layer: usize,
    offset: u64,
    len: u64,
}

/// Start replaying `records` against `layers` (indexed by `layer_index`) with `concurrency`
/// background workers (0 means 1).
///
/// Only read records are replayed, in order, each split into reads of at most 1 MiB and
/// clamped to its layer's size. Records naming a layer that does not exist are skipped with
/// one warning. A failed read is logged (naming layer and offset) and counted, never fatal.
/// Each worker runs under [`obd_core::priority::background`] and defers its next read while
/// demand reads are in flight (at most [`super::DEMAND_YIELD_MAX`] per read).
pub fn replay(
    layers: Vec<Arc<dyn ReadAt>>,
    records: Vec<TraceRecord>,
    concurrency: usize,
) -> ReplayHandle {
    let shared = Shared::new(format!("replay of {} trace records", records.len()));
    let (queue, skipped) = plan_spans(&layers, &records);
    shared.add_skipped(skipped);
    let total = queue.iter().fold(0u64, |a, s| a.saturating_add(s.len));
    let reads_estimate = queue.iter().fold(0u64, |a, s| {
        a.saturating_add(s.len.div_ceil(MAX_RECORD_COUNT))
    });
    let workers = concurrency
        .clamp(1, MAX_CONCURRENCY)
        .min(usize::try_from(reads_estimate).unwrap_or(usize::MAX));
    tracing::info!(
        "prefetch: replaying {} records ({total} bytes) from {} layers with {workers} workers",
        queue.len(),
        layers.len()
    );
    let work = Arc::new(Work {
        layers,
        queue: Mutex::new(queue),
    });
    for i in 0..workers {
        let work = work.clone();
        shared.spawn(format!("obd-replay-{i}"), move |sh| work.run(sh));
    }
    ReplayHandle::new(shared)
}

/// Turn records into spans: reads only, layer present, clamped to the layer size. Returns
/// the spans and the number of records skipped.
fn plan_spans(layers: &[Arc<dyn ReadAt>], records: &[TraceRecord]) -> (VecDeque<Span>, u64) {
    let sizes: Vec<u64> = layers.iter().map(|l| l.size()).collect();
    let mut queue = VecDeque::with_capacity(records.len());
    let mut missing = BTreeSet::new();
    let mut skipped = 0u64;
    for r in records {
        let layer = usize::try_from(r.layer_index).unwrap_or(usize::MAX);
        let (Some(&size), TraceOp::Read, Ok(offset)) =
            (sizes.get(layer), r.op, u64::try_from(r.offset))
        else {
            if r.op == TraceOp::Read && layer >= sizes.len() {
                missing.insert(r.layer_index);
            }
            skipped += 1;
            continue;
        };
        let len = r.count.min(size.saturating_sub(offset));
        if len == 0 {
            skipped += 1;
            continue;
        }
        queue.push_back(Span { layer, offset, len });
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        tracing::warn!(
            "prefetch: trace names layer index(es) {}{} but the device has {} layers; \
             their records are skipped",
            list.join(", "),
            if missing.len() > 10 { ", ..." } else { "" },
            layers.len()
        );
    }
    (queue, skipped)
}

struct Work {
    layers: Vec<Arc<dyn ReadAt>>,
    queue: Mutex<VecDeque<Span>>,
}

impl Work {
    /// Take the next ≤ 1 MiB read, leaving the rest of a longer span at the front.
    fn next(&self) -> Option<Span> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let span = q.pop_front()?;
        if span.len > MAX_RECORD_COUNT {
            q.push_front(Span {
                layer: span.layer,
                offset: span.offset + MAX_RECORD_COUNT,
                len: span.len - MAX_RECORD_COUNT,
            });
            return Some(Span {
                len: MAX_RECORD_COUNT,
                ..span
            });
        }
        Some(span)
    }

    fn run(&self, sh: &Shared) {
        let mut buf = Vec::new();
        while sh.yield_to_demand() {
            let Some(span) = self.next() else { return };
            let Some(layer) = self.layers.get(span.layer) else {
                sh.add_skipped(1);
                continue;
            };
            // `len` ≤ 1 MiB, so it fits.
            let len = usize::try_from(span.len).unwrap_or(0);
            buf.resize(len, 0);
            match layer.read_exact_at(&mut buf[..len], span.offset) {
                Ok(()) => sh.add_done(span.len),
                Err(e) => {
                    if sh.add_failed() {
                        tracing::warn!(
                            "prefetch: replay read of {} bytes at offset {} of layer {} failed: {e}",
                            span.len,
                            span.offset,
                            span.layer
                        );
                    }
                }
            }
        }
    }
}
