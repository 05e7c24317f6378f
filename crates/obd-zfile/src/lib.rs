//! ZFile: overlaybd's seekable compressed container, read and written bit-compatibly.
//!
//! ```text
//!   | header 512 | blk0 [crc0] | blk1 [crc1] | ... | index: u32 x N | trailer 512 |
//! ```
//!
//! Each block holds `block_size` bytes of the original (the last one may be short),
//! compressed with LZ4 or zstd, optionally followed by a raw CRC32C (seed 100007).
//! The index stores the stored length of each block; the trailer (or, with the
//! header-overwrite flag, the header) says where the index is.
//!
//! - [`layout`]: pure codecs for the header/trailer ([`ZFileHeader`]) and helpers.
//! - [`JumpTable`]: block offsets in memory, without upstream's 16-bit limits.
//! - [`ZFileReader`]: random access to the original bytes, as an [`obd_core::ReadAt`].
//! - [`ZFileWriter`]: streaming, multi-threaded compression with deterministic output.
//! - [`compress_file`], [`compress_reader`], [`compress_to_vec`], [`decompress_to`].

//! # Compatibility with upstream overlaybd
//!
//! Files written here have upstream's exact layout and header fields; LZ4 blocks decode with
//! liblz4, zstd blocks are level-3 frames (libzstd versions differ, so a few blocks are a
//! few bytes longer or shorter than upstream's). Upstream's reader cannot fetch a block
//! whose stored size exceeds 64 KiB, which happens only with 64 KiB blocks of incompressible
//! data; [`ZFileFinish::upstream_unreadable`] lists such blocks (see [`ZFileWriter`]).
//! The reader here has no such limit.

#![forbid(unsafe_code)]

mod codec;
mod convert;
#[doc(hidden)]
pub mod fuzzing;
mod jump;
pub mod layout;
mod pool;
mod reader;
mod writer;

pub use codec::ZSTD_LEVEL;
pub use convert::{compress_file, compress_reader, compress_to_vec, decompress_to};
pub use jump::JumpTable;
pub use layout::{Algorithm, ZFileHeader, is_zfile};
pub use reader::{ZFileInfo, ZFileReader};
pub use writer::{ZFileFinish, ZFileOptions, ZFileWriter};
