//! The byte layout of the tar wrapper, as pure functions: recognising a wrapped file
//! ([`detect`]) and building the bytes around a payload ([`wrap_header`], [`trailer`]).
//!
//! ```text
//!   0     PAX header block      typeflag 'x', name "overlaybd.pax", size = record length
//!   512   PAX record block      "<n> size=<payload size>\n", NUL padded
//!   1024  ustar header block    typeflag '0', name "overlaybd.commit", size field 0
//!   1536  payload               <payload size> bytes
//!         zero padding to a multiple of 512, then two zero blocks
//! ```

mod build;
mod detect;
pub(crate) mod field;

pub use build::{
    ENTRY_NAME, HEADER_LEN, OWNER_NAME, PAX_NAME, padding_len, pax_record, trailer, wrap_header,
    wrapped_len,
};
pub use detect::{MAX_HEADERS_LEN, TarEntry, UNFINISHED_NAME, detect};
pub(crate) use detect::{Walk, walk};
pub use field::{BLOCK, MAX_OCTAL_6, MAX_OCTAL_11};
