//! A window into another source, e.g. the payload of a tar-wrapped layer blob.

use std::path::Path;

use crate::io::check_range;
use crate::{Error, ReadAt, Result, ResultExt};

/// The bytes `[start, start + len)` of `inner`, presented as a source of its own.
#[derive(Debug, Clone)]
pub struct Slice<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Slice<R> {
    /// A window of `len` bytes at `start`; fails if it does not fit inside `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> Result<Self> {
        let size = inner.size();
        let r = check_range(size, start, len);
        if let (Err(e), Some(p)) = (&r, inner.path()) {
            return Err(Error::corrupt(e.message().to_string()).with_path(p));
        }
        r?;
        Ok(Slice { inner, start, len })
    }

    /// Where the window starts inside the inner source.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The wrapped source.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: ReadAt> ReadAt for Slice<R> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        let r = self.inner.read_exact_at(buf, self.start + offset);
        match self.inner.path() {
            Some(p) => r.with_path(p),
            None => r,
        }
    }

    fn path(&self) -> Option<&Path> {
        self.inner.path()
    }

    fn file_region(&self) -> Option<(&std::fs::File, u64)> {
        self.inner
            .file_region()
            .map(|(f, base)| (f, base + self.start))
    }
}
