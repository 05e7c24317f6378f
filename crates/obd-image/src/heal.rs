//! Self-healing reads of remote layers: when bytes that came through the cache fail a
//! format check (ZFile CRC, LSMT structure), the cached copy is dropped and the read is
//! tried once more from the registry. A second failure is returned as is, so a bad blob
//! gives an error, never a loop and never wrong bytes.

use std::sync::Arc;

use obd_core::{ErrorKind, ReadAt, Result};

use crate::source::RemoteSource;

/// Whether an error means "the bytes were bad" (worth one refetch).
pub(crate) fn is_bad_bytes(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Checksum | ErrorKind::Corrupt)
}

/// A layer whose reads heal once through [`RemoteSource::heal`].
pub(crate) struct HealingRead {
    inner: Arc<dyn ReadAt>,
    remote: Arc<dyn RemoteSource>,
    digest: String,
}

impl HealingRead {
    pub(crate) fn new(
        inner: Arc<dyn ReadAt>,
        remote: Arc<dyn RemoteSource>,
        digest: &str,
    ) -> HealingRead {
        HealingRead {
            inner,
            remote,
            digest: digest.to_string(),
        }
    }
}

impl ReadAt for HealingRead {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self.inner.read_exact_at(buf, offset) {
            Err(e) if is_bad_bytes(e.kind()) => {
                tracing::warn!(
                    digest = %self.digest,
                    offset,
                    len = buf.len(),
                    "remote layer failed a check ({e}); dropping its cached bytes and refetching once"
                );
                self.remote.heal(&self.digest);
                self.inner.read_exact_at(buf, offset)
            }
            r => r,
        }
    }
}
