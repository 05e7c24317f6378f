//! The one-entry tar wrapper overlaybd puts around layer blobs (`overlaybd-commit -t`,
//! `overlaybd-zfile -t`, `overlaybd-merge -t`), so that a registry sees a valid uncompressed
//! tar layer: `tar{ ZFile{ LSMT } }`.
//!
//! - [`layout`]: pure functions. [`layout::detect`] finds the payload of a wrapped file;
//!   [`layout::wrap_header`] and [`layout::trailer`] build the bytes upstream writes.
//! - [`open_payload`]: any [`obd_core::ReadAt`] as the payload it carries (the whole source
//!   when it is not a tar), as an [`obd_core::Slice`].
//! - [`TarWriter`] and [`wrap_file`]: write a wrapped file from a payload of known size.

#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
mod reader;
mod writer;

pub use layout::TarEntry;
pub use reader::{open_payload, open_payload_entry};
pub use writer::{EntryMeta, TarWriter, wrap_file, wrap_file_with};
