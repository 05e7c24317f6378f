//! Prefetch: getting a lazily loaded image's data before the container asks for it.
//!
//! ```text
//!   recordTracePath ──plan()──> Record(path)   TraceRecorder::start + wrap(layer) per lower
//!                               Replay(records) replay(layers, records, concurrency)
//!                               FileList(paths) prefetch_files(device, paths, concurrency)
//!                               None
//! ```
//!
//! - [`trace`]: the binary trace file codec, bit-compatible with upstream overlaybd.
//! - [`TraceRecorder`]: records successful layer reads until `<trace>.lock` is deleted or the
//!   device closes, then writes the trace and `<trace>.ok`.
//! - [`replay()`] / [`prefetch_files`]: background workers (marked with
//!   [`obd_core::priority::background`], deferring to demand reads) behind a
//!   [`ReplayHandle`] that reports progress, stops, and stops on drop.
//! - [`plan()`]: upstream's choice between recording, replaying and a file list.

mod ext4walk;
mod filelist;
mod handle;
mod plan;
mod record;
mod replay;
pub mod trace;

pub use filelist::{MAX_LIST_BYTES, parse_list, prefetch_files};
pub use handle::{DEMAND_YIELD_MAX, ReplayHandle, ReplayStats};
pub use plan::{MAX_TRACE_BYTES, Plan, plan, plan_from_bytes};
pub use record::{LOCK_POLL, MAX_RECORDS, TraceRecorder};
pub use replay::{DEFAULT_CONCURRENCY, MAX_CONCURRENCY, replay};
pub use trace::{TraceHeader, TraceOp, TraceRecord, decode, encode};
