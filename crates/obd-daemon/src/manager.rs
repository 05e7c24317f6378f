//! The set of attached devices: open a device from its config, export it, record it; and the
//! reverse. Every method blocks (device opening, mounting), so async callers use
//! `spawn_blocking`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use obd_core::BlockDevice;
use obd_fuse::{FuseExport, FuseOptions};
use obd_image::config::device::result_file_hint;
use obd_image::{DeviceConfig, ImageDevice, ImageService, write_result};
use obd_nbd::{NbdAddr, NbdServer};
use tracing::{error, info, warn};

use crate::protocol::{AttachRequest, DeviceEntry, ExportSpec};
use crate::state::StateStore;

/// A running export.
enum Export {
    Fuse(FuseExport),
    Nbd(NbdServer),
}

/// One attached device.
struct Attached {
    req: AttachRequest,
    entry: DeviceEntry,
    device: Arc<ImageDevice>,
    export: Option<Export>,
}

/// Attached devices of one daemon.
pub struct Manager {
    service: ImageService,
    state: Option<StateStore>,
    devices: Mutex<Vec<Attached>>,
    /// Export targets and ids being attached right now (to refuse a concurrent duplicate).
    pending: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The normal form of an export target used for matching: FUSE paths as given (absolute),
/// NBD unix addresses also by their bare socket path.
fn target_keys(spec: &ExportSpec) -> Vec<String> {
    match spec {
        ExportSpec::Fuse(p) => vec![p.display().to_string()],
        ExportSpec::Nbd(a) => {
            let mut v = vec![a.clone()];
            if let Some(p) = a.strip_prefix("unix:") {
                v.push(p.to_string());
            }
            v
        }
    }
}

impl Manager {
    /// A manager over `service`, recording attachments in `state` when given.
    pub fn new(service: ImageService, state: Option<StateStore>) -> Self {
        Manager {
            service,
            state,
            devices: Mutex::new(Vec::new()),
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// The attached devices.
    pub fn list(&self) -> Vec<DeviceEntry> {
        lock(&self.devices)
            .iter()
            .map(|d| d.entry.clone())
            .collect()
    }

    /// Number of attached devices.
    /// The image service devices are opened with.
    pub fn service(&self) -> &ImageService {
        &self.service
    }

    /// Number of attached devices.
    pub fn len(&self) -> usize {
        lock(&self.devices).len()
    }

    /// Whether no device is attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn save_state(&self) {
        let Some(state) = &self.state else { return };
        let recs: Vec<AttachRequest> = lock(&self.devices).iter().map(|d| d.req.clone()).collect();
        if let Err(e) = state.save(&recs) {
            error!("cannot record attached devices: {e:#}");
        }
    }

    /// Open and export the device of `req`, and record it. On failure the config's
    /// `resultFile` (when it can be found) gets `failed:<reason>`; on success `success`.
    pub fn attach(&self, req: AttachRequest) -> Result<DeviceEntry> {
        let entry = self.attach_unrecorded(req)?;
        self.save_state();
        Ok(entry)
    }

    /// [`Manager::attach`] without updating the record (restore rewrites it once at the end,
    /// so a crash in the middle of a restore loses no recorded device).
    fn attach_unrecorded(&self, mut req: AttachRequest) -> Result<DeviceEntry> {
        let id = req.id.clone().unwrap_or_else(|| req.export.target());
        req.id = Some(id.clone());
        let mut keys = target_keys(&req.export);
        keys.push(id.clone());
        {
            let devs = lock(&self.devices);
            for d in devs.iter() {
                let mut theirs = target_keys(&d.req.export);
                theirs.push(d.entry.id.clone());
                if d.req.export == req.export && d.req.config == req.config && d.entry.id == id {
                    // The same request again (e.g. after a restart restored it): already done.
                    info!(
                        device = id,
                        "{} is already attached from the same config", req.export
                    );
                    return Ok(d.entry.clone());
                }
                if keys.iter().any(|k| theirs.contains(k)) {
                    bail!(
                        "{} is already attached (device {}, config {})",
                        req.export,
                        d.entry.id,
                        d.entry.config.display()
                    );
                }
            }
            let mut pending = lock(&self.pending);
            if keys.iter().any(|k| pending.contains(k)) {
                bail!("{} is being attached by another request", req.export);
            }
            pending.extend(keys.iter().cloned());
        }
        let outcome = self.attach_reserved(&req, &id);
        {
            let mut pending = lock(&self.pending);
            for k in &keys {
                pending.remove(k);
            }
        }
        let attached = outcome?;
        let entry = attached.entry.clone();
        lock(&self.devices).push(attached);
        Ok(entry)
    }

    fn attach_reserved(&self, req: &AttachRequest, id: &str) -> Result<Attached> {
        let loaded = DeviceConfig::load(&req.config).map_err(|e| {
            // The config does not parse: its resultFile may still be readable.
            report(result_file_hint(&req.config).as_deref(), Err(&e));
            error!(device = id, "attach failed: {e}");
            anyhow!("{e}")
        })?;
        for w in &loaded.warnings {
            warn!(device = id, "{w}");
        }
        let cfg = loaded.value;
        let result_file = cfg.result_path(&req.config);
        let opened = self.service.open_config(&cfg, &req.config).map_err(|e| {
            report(result_file.as_deref(), Err(&e));
            error!(device = id, "attach failed: {e}");
            anyhow!("{e}")
        })?;
        for w in &opened.info().warnings {
            warn!(device = id, "{w}");
        }
        let device = Arc::new(opened);
        let export = match self.start_export(req, id, device.clone()) {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("{e:#}");
                let err = obd_core::Error::new(obd_core::ErrorKind::Io, msg.clone());
                report(result_file.as_deref(), Err(&err));
                error!(device = id, "attach failed: {msg}");
                return Err(e);
            }
        };
        report(result_file.as_deref(), Ok(()));
        let info = device.info();
        info!(
            device = id,
            "attached {} ({} bytes, {} lowers, {}) from {}",
            req.export,
            info.size,
            info.lowers,
            if info.read_only {
                "read-only"
            } else {
                "writable"
            },
            req.config.display()
        );
        let entry = DeviceEntry {
            id: id.to_string(),
            config: req.config.clone(),
            export: req.export.clone(),
            size: info.size,
            read_only: info.read_only,
            lowers: info.lowers,
            attached_at: now_secs(),
        };
        Ok(Attached {
            req: req.clone(),
            entry,
            device,
            export: Some(export),
        })
    }

    fn start_export(
        &self,
        req: &AttachRequest,
        id: &str,
        device: Arc<ImageDevice>,
    ) -> Result<Export> {
        let dev: Arc<dyn BlockDevice> = device;
        match &req.export {
            ExportSpec::Fuse(path) => {
                prepare_fuse_path(path)?;
                let defaults = FuseOptions::default();
                let opts = FuseOptions {
                    direct_io: req.options.direct_io,
                    threads: req
                        .options
                        .threads
                        .map_or(defaults.threads, |t| t.clamp(1, 64)),
                    fs_name: format!("obd:{id}"),
                    ..defaults
                };
                let fx = FuseExport::mount(dev, path, &opts)
                    .with_context(|| format!("cannot export on {}", path.display()))?;
                Ok(Export::Fuse(fx))
            }
            ExportSpec::Nbd(addr) => {
                let a: NbdAddr = addr
                    .parse()
                    .map_err(|e| anyhow!("invalid NBD address '{addr}': {e}"))?;
                let srv = NbdServer::start(dev, &a, id)
                    .with_context(|| format!("cannot serve NBD on {addr}"))?;
                Ok(Export::Nbd(srv))
            }
        }
    }

    /// Flush and remove the device named by `target` (id, FUSE path or NBD address).
    pub fn detach(&self, target: &str) -> Result<DeviceEntry> {
        let mut devs = lock(&self.devices);
        let pos = devs
            .iter()
            .position(|d| {
                d.entry.id == target || target_keys(&d.req.export).iter().any(|k| k == target)
            })
            .ok_or_else(|| anyhow!("no attached device matches '{target}'"))?;
        let mut d = devs.remove(pos);
        drop(devs);
        if let Err(e) = shutdown_one(&mut d) {
            error!(device = d.entry.id, "detach: {e:#}");
            if d.export.is_some() {
                // Still exported (e.g. a loop device holds the FUSE file): keep it attached.
                lock(&self.devices).push(d);
            }
            return Err(e);
        }
        self.save_state();
        info!(device = d.entry.id, "detached {}", d.req.export);
        Ok(d.entry)
    }

    /// Flush every device and stop every export (daemon shutdown). The record is kept, so
    /// the next start brings the devices back.
    pub fn shutdown_all(&self) {
        let all: Vec<Attached> = std::mem::take(&mut *lock(&self.devices));
        for mut d in all {
            if let Err(e) = shutdown_one(&mut d) {
                error!(device = d.entry.id, "shutdown: {e:#}");
            } else {
                info!(device = d.entry.id, "stopped {}", d.req.export);
            }
        }
    }

    /// Re-attach the recorded devices (at daemon start). Devices that fail are logged, get
    /// `failed:<reason>` in their resultFile, and are dropped from the record.
    pub fn restore(&self) -> usize {
        let Some(state) = &self.state else { return 0 };
        let recs = match state.load() {
            Ok(r) => r,
            Err(e) => {
                error!("cannot restore devices: {e:#}");
                return 0;
            }
        };
        let mut n = 0;
        // Dead FUSE mounts left by the previous instance are cleared by `attach`.
        for req in recs {
            match self.attach_unrecorded(req.clone()) {
                Ok(_) => n += 1,
                Err(e) => error!("cannot restore {}: {e:#}", req.export),
            }
        }
        self.save_state();
        n
    }
}

/// Stop the export of `d`; both exports flush the device themselves. A FUSE export that
/// cannot be unmounted (busy) stays in `d`.
fn shutdown_one(d: &mut Attached) -> Result<()> {
    match d.export.take() {
        Some(Export::Fuse(mut f)) => f.try_unmount().map_err(|e| {
            d.export = Some(Export::Fuse(f));
            anyhow::Error::from(e)
        }),
        Some(Export::Nbd(n)) => n.shutdown().map_err(anyhow::Error::from),
        None => d
            .device
            .flush()
            .with_context(|| format!("flushing {}", d.entry.id)),
    }
}

/// Write the outcome to a result file, logging (not failing) when that is impossible.
fn report(result_file: Option<&Path>, outcome: Result<(), &obd_core::Error>) {
    if let Some(p) = result_file
        && let Err(e) = write_result(p, outcome)
    {
        warn!("cannot write result file {}: {e}", p.display());
    }
}

/// Make sure `path` can take a FUSE mount: clear a dead one left by a crashed daemon.
fn prepare_fuse_path(path: &PathBuf) -> Result<()> {
    if obd_fuse::is_fuse_mounted(path) {
        match std::fs::metadata(path) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {
                obd_fuse::clear_stale_mount(path)?;
                warn!("cleared a dead FUSE mount at {}", path.display());
            }
            _ => bail!(
                "{} already has a live FUSE mount (another daemon?); detach it there first",
                path.display()
            ),
        }
    }
    Ok(())
}
