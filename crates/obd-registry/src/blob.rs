//! [`RemoteBlobFile`]: a registry blob as an [`obd_core::ReadAt`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obd_core::priority::{DemandGuard, is_background, wait_for_idle_demand};
use obd_core::{Error, ErrorKind, ReadAt, Result, check_range};
use obd_metrics::{Metrics, ReadSource};
use reqwest::Url;

use crate::MAX_REQUEST_BYTES;
use crate::registry::Shared;
use crate::rt::{AbortOnDrop, OwnedRuntime};
use crate::util::redact_url;

/// Per-blob state shared with the tasks that fetch it.
pub(crate) struct BlobState {
    pub shared: Arc<Shared>,
    /// `<repo_blob_url>/<digest>`.
    pub url: Url,
    /// The URL for messages (no user info).
    pub display_url: String,
    /// The repository blob URL, key of the auth state.
    pub repo_key: String,
    pub digest: String,
    /// Whether data requests go through the P2P proxy.
    pub p2p: AtomicBool,
    /// The cached redirect target and its expiry.
    actual: Mutex<Option<(Url, Instant)>>,
}

/// Attempts made and the last failure of one ranged fetch, for timeout messages.
#[derive(Default)]
pub(crate) struct Progress {
    pub attempts: AtomicU32,
    pub last: Mutex<Option<String>>,
}

impl BlobState {
    pub fn new(
        shared: Arc<Shared>,
        url: Url,
        repo_key: String,
        digest: String,
        p2p: AtomicBool,
    ) -> Self {
        BlobState {
            shared,
            display_url: redact_url(&url),
            url,
            repo_key,
            digest,
            p2p,
            actual: Mutex::new(None),
        }
    }

    /// The redirect target, if one is cached and fresh.
    pub fn actual_url(&self) -> Option<Url> {
        let mut g = self.actual.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Some((u, until)) if Instant::now() < *until => Some(u.clone()),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    pub fn set_actual(&self, url: Url) {
        let until = Instant::now() + self.shared.opts.redirect_ttl;
        *self.actual.lock().unwrap_or_else(|p| p.into_inner()) = Some((url, until));
    }

    pub fn drop_actual(&self) {
        *self.actual.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The final error of a request that ran out of time: `what` (`"reading 4096 bytes"`)
    /// at `off`, with the attempts made and the last failure seen.
    pub fn timed_out(&self, what: &str, off: u64, attempts: u32, last: Option<String>) -> Error {
        let limit = self.shared.opts.timeout;
        let mut msg = format!("{what} timed out after {limit:?}");
        if attempts > 0 {
            let plural = if attempts == 1 { "" } else { "s" };
            msg.push_str(&format!(" ({attempts} attempt{plural}"));
            match last {
                Some(l) => msg.push_str(&format!("; last error: {l})")),
                None => msg.push(')'),
            }
        }
        Error::new(ErrorKind::TimedOut, msg)
            .with_path(&self.display_url)
            .at_offset(off)
    }
}

/// A blob in a registry, read lazily with HTTP range requests.
///
/// Each [`ReadAt::read_exact_at`] sends one `Range` GET (reads over 8 MiB are split into
/// 8 MiB requests sent concurrently) under one deadline ([`crate::RegistryOptions::timeout`])
/// with bounded retries; it never returns short or wrong bytes. Safe to call from many
/// threads at once, and from inside another tokio runtime.
pub struct RemoteBlobFile {
    rt: Arc<OwnedRuntime>,
    state: Arc<BlobState>,
    size: u64,
}

impl std::fmt::Debug for RemoteBlobFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBlobFile")
            .field("url", &self.state.display_url)
            .field("size", &self.size)
            .finish()
    }
}

impl RemoteBlobFile {
    pub(crate) fn new(rt: Arc<OwnedRuntime>, state: Arc<BlobState>, size: u64) -> Self {
        RemoteBlobFile { rt, state, size }
    }

    /// The blob URL (`<repo_blob_url>/<digest>`, without user info).
    pub fn url(&self) -> &str {
        &self.state.display_url
    }

    /// The blob digest (`sha256:…`).
    pub fn digest(&self) -> &str {
        &self.state.digest
    }

    /// Whether data requests currently go through the P2P proxy.
    pub fn uses_p2p(&self) -> bool {
        self.state.p2p.load(Ordering::Relaxed)
    }

    /// The cached redirect target (query string redacted), if any.
    pub fn redirect_target(&self) -> Option<String> {
        self.state.actual_url().map(|u| redact_url(&u))
    }

    fn fetch_all(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let total = buf.len() as u64;
        let timeout = self.state.shared.opts.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let std_deadline = Instant::now() + timeout + Duration::from_secs(2);
        let (tx, rx) = mpsc::channel();
        let mut tasks = Vec::new();
        let mut pieces = Vec::new();
        for (i, piece) in buf.chunks_mut(MAX_REQUEST_BYTES).enumerate() {
            let off = offset + (i * MAX_REQUEST_BYTES) as u64;
            let len = piece.len() as u64;
            let st = self.state.clone();
            let tx = tx.clone();
            tasks.push(self.rt.handle().spawn(async move {
                let r = st.fetch_range(off, len, deadline).await;
                let _ = tx.send((i, r));
            }));
            pieces.push(piece);
        }
        drop(tx);
        let _abort = AbortOnDrop(tasks);
        let mut left = pieces.len();
        while left > 0 {
            let wait = std_deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((i, Ok(data))) => {
                    let piece = pieces.get_mut(i).ok_or_else(|| {
                        Error::new(ErrorKind::Io, "internal: piece index out of range")
                    })?;
                    if data.len() != piece.len() {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "internal: got {} bytes for a {}-byte piece",
                                data.len(),
                                piece.len()
                            ),
                        )
                        .with_path(&self.state.display_url)
                        .at_offset(offset));
                    }
                    piece.copy_from_slice(&data);
                    left -= 1;
                }
                Ok((_, Err(e))) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.state.timed_out(
                        &format!("reading {total} bytes"),
                        offset,
                        0,
                        None,
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        "the registry client runtime stopped during the read",
                    )
                    .with_path(&self.state.display_url)
                    .at_offset(offset));
                }
            }
        }
        Ok(())
    }
}

impl ReadAt for RemoteBlobFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)
            .map_err(|e| e.with_path(&self.state.display_url).at_offset(offset))?;
        if buf.is_empty() {
            return Ok(());
        }
        let _demand = if is_background() {
            wait_for_idle_demand(Duration::from_millis(500));
            None
        } else {
            Some(DemandGuard::new())
        };
        let start = Instant::now();
        let res = self.fetch_all(buf, offset);
        Metrics::global().observe_read(ReadSource::Registry, start.elapsed());
        if let Err(e) = &res {
            tracing::warn!(
                layer = %self.state.digest,
                offset,
                len = buf.len(),
                kind = ?e.kind(),
                error = %e,
                "registry read failed"
            );
        }
        res
    }
}
