//! The client side of the control API, used by `obd attach|detach|list|status`, and the
//! start of a background daemon when none is running.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::protocol::{ApiError, AttachRequest, DetachRequest, DeviceEntry, Health};

/// A connection-per-call client of one daemon's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call_async(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "no obd daemon is listening on {} ({e}); start one with `obd serve` \
                 (or let `obd attach` start it)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("control API handshake failed")?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "obd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("cannot build request")?;
        let resp = sender
            .send_request(req)
            .await
            .context("control API request failed")?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("cannot read the control API reply")?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (status, bytes) = rt.block_on(async {
            tokio::time::timeout(timeout, self.call_async(method, path, body))
                .await
                .map_err(|_| {
                    anyhow!(
                        "the obd daemon on {} did not answer {path} within {} s",
                        self.socket.display(),
                        timeout.as_secs()
                    )
                })?
        })?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{msg}");
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("invalid reply from the obd daemon to {path}"))
    }

    /// `GET /v1/health`.
    pub fn health(&self) -> Result<Health> {
        self.call(
            Method::GET,
            "/v1/health",
            Vec::new(),
            Duration::from_secs(10),
        )
    }

    /// `GET /v1/devices`.
    pub fn list(&self) -> Result<Vec<DeviceEntry>> {
        self.call(
            Method::GET,
            "/v1/devices",
            Vec::new(),
            Duration::from_secs(30),
        )
    }

    /// `POST /v1/attach`: returns once the export is ready.
    pub fn attach(&self, req: &AttachRequest) -> Result<DeviceEntry> {
        let body = serde_json::to_vec(req)?;
        self.call(Method::POST, "/v1/attach", body, Duration::from_secs(600))
    }

    /// `POST /v1/detach`.
    pub fn detach(&self, target: &str) -> Result<DeviceEntry> {
        let body = serde_json::to_vec(&DetachRequest {
            target: target.to_string(),
        })?;
        self.call(Method::POST, "/v1/detach", body, Duration::from_secs(600))
    }

    /// `GET /v1/layers`: remote layers (cache fill, background download).
    pub fn layers(&self) -> Result<Vec<obd_image::RemoteLayerStatus>> {
        self.call(
            Method::GET,
            "/v1/layers",
            Vec::new(),
            Duration::from_secs(30),
        )
    }

    /// `GET /v1/cache`.
    pub fn cache(&self) -> Result<crate::protocol::CacheReply> {
        self.call(
            Method::GET,
            "/v1/cache",
            Vec::new(),
            Duration::from_secs(60),
        )
    }

    /// `POST /v1/cache/gc`.
    pub fn cache_gc(&self, target: Option<u64>) -> Result<serde_json::Value> {
        let body = serde_json::to_vec(&crate::protocol::GcRequest { target })?;
        self.call(Method::POST, "/v1/cache/gc", body, Duration::from_secs(600))
    }

    /// `POST /v1/cache/clear`.
    pub fn cache_clear(&self) -> Result<serde_json::Value> {
        self.call(
            Method::POST,
            "/v1/cache/clear",
            Vec::new(),
            Duration::from_secs(600),
        )
    }

    /// `POST /v1/shutdown`.
    pub fn shutdown(&self) -> Result<()> {
        let _: serde_json::Value = self.call(
            Method::POST,
            "/v1/shutdown",
            Vec::new(),
            Duration::from_secs(10),
        )?;
        Ok(())
    }
}

/// Make sure a daemon answers on `socket`: when none does, start `exe serve` in the
/// background with `service_config`, and wait until it is ready or has failed (its error
/// output is returned in the error). Returns whether a daemon was started.
pub fn ensure_daemon(exe: &Path, socket: &Path, service_config: &Path) -> Result<bool> {
    let client = Client::new(socket);
    if client.health().is_ok() {
        return Ok(false);
    }
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--service-config")
        .arg(service_config)
        .arg("--socket")
        .arg(socket)
        .arg("--background")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} serve", exe.display()))?;
    let mut pipe = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut pipe).take(64 * 1024).read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| {
        anyhow!(
            "the obd daemon started for {} did not become ready within 120 s",
            socket.display()
        )
    })?;
    // The pipe closes when the daemon is ready (it detaches its stderr) or when it exits.
    for _ in 0..100 {
        if let Some(status) = child.try_wait().context("cannot check the daemon")? {
            bail!(
                "the obd daemon could not start ({status}): {}",
                String::from_utf8_lossy(&text).trim()
            );
        }
        if client.health().is_ok() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    client.health().with_context(|| {
        format!(
            "the obd daemon started but does not answer on {}",
            socket.display()
        )
    })?;
    Ok(true)
}
