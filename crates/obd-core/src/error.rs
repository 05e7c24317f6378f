//! One error type for the whole stack: a small stable kind, the file and offset it concerns,
//! and a self-contained message.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, coarsely. Stable and matchable; details live in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system reported an I/O error.
    Io,
    /// On-disk structures are inconsistent (bad magic, impossible sizes, unsorted index...).
    Corrupt,
    /// Stored data does not match its checksum.
    Checksum,
    /// A valid file that uses a feature this build does not implement.
    Unsupported,
    /// A caller passed an argument that cannot be honoured (misaligned offset, bad option).
    InvalidInput,
    /// A read or write outside the device or file.
    OutOfRange,
    /// A file or object does not exist.
    NotFound,
    /// A write to something that is read-only.
    ReadOnly,
    /// Creating something that already exists.
    AlreadyExists,
    /// A remote operation did not finish within its time limit.
    TimedOut,
    /// Credentials were missing or rejected (registry 401/403).
    PermissionDenied,
}

impl ErrorKind {
    /// The errno a block frontend (FUSE, NBD) reports for this kind of failure.
    pub fn errno(self) -> i32 {
        match self {
            // A block device has one way to say a remote read failed: EIO.
            ErrorKind::Io
            | ErrorKind::Corrupt
            | ErrorKind::Checksum
            | ErrorKind::TimedOut
            | ErrorKind::PermissionDenied => libc::EIO,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::InvalidInput | ErrorKind::OutOfRange => libc::EINVAL,
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::AlreadyExists => libc::EEXIST,
        }
    }
}

/// The error type of every overlaybd-rs library.
///
/// Its `Display` is a complete sentence for a user: `<file>: at offset <n>: <what>[: <cause>]`.
/// The innermost context wins: once a path or offset is set, outer layers do not overwrite it.
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    offset: Option<u64>,
    os_error: Option<i32>,
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            path: None,
            offset: None,
            os_error: None,
        }
    }

    /// Inconsistent on-disk data.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// A checksum mismatch.
    pub fn checksum(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Checksum, message)
    }

    /// An unsupported feature.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// A bad argument.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An access outside the valid range.
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfRange, message)
    }

    /// Wrap an OS error, with a short description of what was being done (`"read"`, `"fsync"`).
    pub fn io(op: &str, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            std::io::ErrorKind::UnexpectedEof => ErrorKind::OutOfRange,
            std::io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            std::io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        let os_error = err.raw_os_error();
        let mut e = Self::new(kind, format!("{op} failed: {err}"));
        e.os_error = os_error;
        e
    }

    /// Attach the file this error concerns, unless an inner layer already did.
    #[must_use]
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attach the byte offset this error concerns, unless an inner layer already did.
    #[must_use]
    pub fn at_offset(mut self, offset: u64) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }

    /// Prefix the message with more context (`"layer 3"`, `"reading index"`).
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The classification.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without path and offset.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file the error concerns, if known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset the error concerns, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The errno to report to a kernel frontend.
    pub fn errno(&self) -> i32 {
        match (self.kind, self.os_error) {
            (ErrorKind::Io, Some(code)) => code,
            (kind, _) => kind.errno(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(o) = self.offset {
            write!(f, "at offset {o}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self)
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::NotFound => std::io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => std::io::ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput | ErrorKind::OutOfRange => std::io::ErrorKind::InvalidInput,
            ErrorKind::Unsupported => std::io::ErrorKind::Unsupported,
            ErrorKind::Corrupt | ErrorKind::Checksum => std::io::ErrorKind::InvalidData,
            ErrorKind::ReadOnly => std::io::ErrorKind::ReadOnlyFilesystem,
            ErrorKind::TimedOut => std::io::ErrorKind::TimedOut,
            ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
            ErrorKind::Io => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Adds path and offset context to results.
pub trait ResultExt<T> {
    /// See [`Error::with_path`].
    fn with_path(self, path: impl AsRef<Path>) -> Result<T>;
    /// See [`Error::at_offset`].
    fn at_offset(self, offset: u64) -> Result<T>;
    /// See [`Error::context`].
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.with_path(path))
    }
    fn at_offset(self, offset: u64) -> Result<T> {
        self.map_err(|e| e.at_offset(offset))
    }
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_offset() {
        let e = Error::corrupt("bad magic")
            .at_offset(512)
            .with_path("/x/layer");
        assert_eq!(e.to_string(), "/x/layer: at offset 512: bad magic");
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn innermost_context_wins() {
        let e = Error::checksum("crc").with_path("inner").at_offset(1);
        let e = e.with_path("outer").at_offset(2);
        assert_eq!(e.path(), Some(Path::new("inner")));
        assert_eq!(e.offset(), Some(1));
    }

    #[test]
    fn io_errors_keep_errno() {
        let e = Error::io("read", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(e.kind(), ErrorKind::Io);
    }
}
