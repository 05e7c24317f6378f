//! The I/O seam of overlaybd-rs.
//!
//! Every layer of the stack speaks the same two small traits:
//!
//! ```text
//!   ReadAt        size() + read_exact_at()          files, ZFile readers, LSMT layers, remote blobs
//!     └─ BlockDevice  + write_at() flush() discard()   writable layers, exported devices
//! ```
//!
//! The traits are synchronous and take `&self`, so one device can serve many threads
//! (FUSE workers, NBD connections) at once; implementations do their own locking.
//! Errors carry a [`ErrorKind`], the file and the offset they concern, so a user reading a
//! message knows which file is bad and where.

#![forbid(unsafe_code)]

pub mod checksum;
mod error;
mod file;
mod io;
mod mem;
pub mod priority;
mod slice;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, ErrorKind, Result, ResultExt};
pub use file::FileDevice;
pub use io::{BlockDevice, ReadAt, ReadOnly, SECTOR_SIZE, check_range};
pub use mem::MemDevice;
pub use slice::Slice;
