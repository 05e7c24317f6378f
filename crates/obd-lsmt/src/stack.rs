//! A stack of read-only layers presented as one device through one merged index.
//!
//! At open the layers' indexes are merged ([`merge_layers`]) into a single [`SegmentIndex`]
//! whose tags name the layer serving each range, so a read costs the same whether the stack
//! has 1 layer or 255: one search, then one read per run of contiguous data.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use obd_core::{Error, ReadAt, Result, check_range};

use crate::index::{SegmentIndex, merge_layers};
use crate::layout::Segment;
use crate::read::read_mapped;
use crate::ro::LsmtLayer;

/// Most layers a stack may hold (upstream `MAX_STACK_LAYERS`).
pub const MAX_STACK_LAYERS: usize = 255;

/// A layer of a stack.
type Layer = LsmtLayer<Arc<dyn ReadAt>>;

/// Open layers on this many threads at most.
const MAX_LOAD_THREADS: usize = 32;

/// A stack of read-only LSMT layers, bottom to top, readable as one device.
pub struct LayerStack {
    layers: Vec<LsmtLayer<Arc<dyn ReadAt>>>,
    index: SegmentIndex,
    vsize: u64,
}

impl std::fmt::Debug for LayerStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStack")
            .field("layers", &self.layers.len())
            .field("segments", &self.index.len())
            .field("vsize", &self.vsize)
            .finish()
    }
}

fn check_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_STACK_LAYERS {
        return Err(Error::invalid_input(format!(
            "a layer stack needs 1 to {MAX_STACK_LAYERS} layers, got {n}"
        )));
    }
    Ok(())
}

fn open_one(i: usize, src: Arc<dyn ReadAt>) -> Result<Layer> {
    LsmtLayer::open(src).map_err(|e| e.context(format_args!("layer {i}")))
}

impl LayerStack {
    /// Open the layer files `layers` (bottom to top) and merge their indexes. Indexes are
    /// loaded in parallel when there are several layers. Fails on 0 or more than 255 layers
    /// and on the first (lowest) layer that does not open.
    pub fn open(layers: Vec<Arc<dyn ReadAt>>) -> Result<LayerStack> {
        check_count(layers.len())?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(2, MAX_LOAD_THREADS)
            .min(layers.len());
        let opened: Vec<Result<Layer>> = if layers.len() < 4 {
            layers
                .into_iter()
                .enumerate()
                .map(|(i, s)| open_one(i, s))
                .collect()
        } else {
            let next = AtomicUsize::new(0);
            let srcs = &layers;
            let mut parts: Vec<(usize, Result<Layer>)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut done = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(src) = srcs.get(i) else { break };
                                done.push((i, open_one(i, Arc::clone(src))));
                            }
                            done
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| match h.join() {
                        Ok(v) => v,
                        Err(p) => std::panic::resume_unwind(p),
                    })
                    .collect()
            });
            parts.sort_by_key(|(i, _)| *i);
            parts.into_iter().map(|(_, r)| r).collect()
        };
        let layers = opened.into_iter().collect::<Result<Vec<_>>>()?;
        Self::from_layers(layers)
    }

    /// Stack already opened layers (bottom to top).
    pub fn from_layers(layers: Vec<LsmtLayer<Arc<dyn ReadAt>>>) -> Result<LayerStack> {
        check_count(layers.len())?;
        let segs: Vec<&[Segment]> = layers.iter().map(|l| l.segments()).collect();
        let merged = merge_layers(&segs);
        let index = SegmentIndex::new(merged)?;
        let vsize = layers
            .iter()
            .rev()
            .map(|l| l.vsize())
            .find(|&v| v > 0)
            .unwrap_or(0);
        Ok(LayerStack {
            layers,
            index,
            vsize,
        })
    }

    /// The merged index; each segment's tag is the layer (0 = bottom) that serves it.
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// The layers, bottom to top.
    pub fn layers(&self) -> &[LsmtLayer<Arc<dyn ReadAt>>] {
        &self.layers
    }

    /// Device size: the virtual size of the top-most layer that has a non-zero one.
    pub fn vsize(&self) -> u64 {
        self.vsize
    }

    /// The layer files, bottom to top (what the merged index's tags refer to).
    pub fn sources(&self) -> Vec<&dyn ReadAt> {
        self.layers.iter().map(|l| l.source().as_ref()).collect()
    }
}

impl ReadAt for LayerStack {
    fn size(&self) -> u64 {
        self.vsize
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.vsize, offset, buf.len() as u64)?;
        let layers = &self.layers;
        read_mapped(&self.index, buf, offset, |tag| {
            layers.get(usize::from(tag)).map(|l| l.source().as_ref())
        })
    }
}
