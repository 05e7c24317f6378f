//! LSMT: overlaybd's layered block-diff format.

#![forbid(unsafe_code)]

pub mod compact;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod layout;
mod read;
pub mod ro;
pub mod rw;
pub mod rw_index;
mod rw_replay;
pub mod seal;
pub mod sparse;
pub mod stack;
pub mod writable;

pub use compact::{
    CommitMeta, CompactStats, compact, compact_to_file, merge_stack, merge_stack_to_file,
};
pub use device::StackDevice;
pub use index::{SegmentIndex, compress_raw_index, merge_layers};
pub use ro::LsmtLayer;
pub use rw::AppendLayer;
pub use rw_index::RwIndex;
pub use seal::{SealInfo, seal_in_place};
pub use sparse::SparseLayer;
pub use stack::LayerStack;
pub use writable::{CreateOptions, WritableLayer, open_writable};
