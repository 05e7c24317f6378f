//! zfile
