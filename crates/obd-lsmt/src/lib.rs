//! LSMT: overlaybd's layered block-diff format.

#![forbid(unsafe_code)]

pub mod layout;
