//! The image service: turns a `config.v1.json` into an [`ImageDevice`], sharing opened
//! layers and merged stacks between the devices of one daemon.
//!
//! ```text
//!   config ─> lowers[i] ─locate─> local file | RemoteSource ─unwrap─> LSMT layer ─┐
//!                                   (shared by (st_dev, st_ino) or digest)         ├─> LayerStack
//!                                                                                   │  (shared by the
//!   upper {data, index} ─> WritableLayer ──> StackDevice(stack, upper) <────────────┘   list of keys)
//! ```
//!
//! Errors name the config file and the lower (`lowers[3]`), followed by the layer file and
//! offset from below: `/x/config.v1.json: lowers[3]: /x/l3/overlaybd.commit: at offset
//! 8192: ...`. The error kind is kept (a missing file is `NotFound`).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use obd_core::{BlockDevice, Error, FileDevice, ReadAt, Result};
use obd_lsmt::{LayerStack, LsmtLayer, StackDevice, WritableLayer};

use crate::blob::unwrap_blob;
use crate::cache::SharedCache;
use crate::config::device::{DeviceConfig, LowerConfig};
use crate::config::global::GlobalConfig;
use crate::device::{Body, DeviceInfo, ImageDevice, Prefetch};
use crate::heal::{HealingRead, is_bad_bytes};
use crate::prefetch::{Plan, TraceRecorder};
use crate::source::{LayerLocation, RemoteBlob, RemoteSource, absolutize, locate};
use crate::upper::open_writable_with_warnings;

/// What identifies a layer for sharing: the local file's identity, or the remote digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LayerKey {
    /// A local file, by `(st_dev, st_ino)`.
    Local {
        /// Device number.
        dev: u64,
        /// Inode number.
        ino: u64,
    },
    /// A registry blob, by digest.
    Remote(String),
}

/// Counters of the service's sharing, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Layers open now (each shared by every device that uses it).
    pub open_layers: usize,
    /// Merged stacks open now.
    pub open_stacks: usize,
    /// Layers opened since the service started.
    pub layer_opens: u64,
    /// Stacks merged since the service started.
    pub stack_opens: u64,
}

/// Writable uppers open in a service, by `(st_dev, st_ino)` of the data file; `None` while
/// one is being opened.
type OpenUppers = HashMap<(u64, u64), Option<Weak<dyn WritableLayer>>>;

/// Opens devices from configs. `Send + Sync`: one per daemon, shared by all its devices.
pub struct ImageService {
    global: GlobalConfig,
    remote: Option<Arc<dyn RemoteSource>>,
    /// Why there is no remote source, when setting one up failed.
    no_remote_reason: Option<String>,
    layers: SharedCache<LayerKey, dyn ReadAt>,
    stacks: SharedCache<Vec<LayerKey>, LayerStack>,
    uppers: Mutex<OpenUppers>,
}

impl std::fmt::Debug for ImageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageService")
            .field("remote", &self.remote.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Open layers on this many threads at most (upstream loads 32 indexes at once).
const MAX_OPEN_THREADS: usize = 32;

/// A lower resolved for opening.
struct Planned {
    index: usize,
    location: LayerLocation,
    key: LayerKey,
}

impl ImageService {
    /// A service with `global` settings and no remote source (local layers only).
    pub fn new(global: GlobalConfig) -> Self {
        ImageService {
            global,
            remote: None,
            no_remote_reason: None,
            layers: SharedCache::new(),
            stacks: SharedCache::new(),
            uppers: Mutex::new(HashMap::new()),
        }
    }

    /// Use `remote` for lowers that are not available locally.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteSource>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// No remote source, because of `reason` (named when a remote lower is attached).
    pub fn without_remote(mut self, reason: String) -> Self {
        self.remote = None;
        self.no_remote_reason = Some(reason);
        self
    }

    /// The global settings.
    pub fn global(&self) -> &GlobalConfig {
        &self.global
    }

    /// Sharing counters.
    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            open_layers: self.layers.live(),
            open_stacks: self.stacks.live(),
            layer_opens: self.layers.builds(),
            stack_opens: self.stacks.builds(),
        }
    }

    /// Load the config file, open every layer, build the device. Does NOT write
    /// `resultFile` (see [`crate::write_result`]). Config warnings end up in
    /// [`DeviceInfo::warnings`].
    pub fn open(&self, config_path: &Path) -> Result<ImageDevice> {
        let loaded = DeviceConfig::load(config_path)?;
        let mut dev = self.open_config(&loaded.value, config_path)?;
        let mut w = loaded.warnings;
        w.append(&mut dev.info.warnings);
        dev.info.warnings = w;
        Ok(dev)
    }

    /// Build the device of an already parsed config. `config_path` names the device in
    /// errors; relative paths in the config are taken relative to its directory.
    pub fn open_config(&self, cfg: &DeviceConfig, config_path: &Path) -> Result<ImageDevice> {
        let name = config_path.display().to_string();
        cfg.validate(&name)?;
        let base = config_path.parent().unwrap_or(Path::new(""));
        let mut warnings = Vec::new();
        if cfg.acceleration_layer {
            warnings.push(format!(
                "{name}: accelerationLayer: lowers[{}] is an acceleration layer; it is left \
                 out of the device (trace replay is not implemented)",
                cfg.lowers.len().saturating_sub(1)
            ));
        }
        let trace_path = cfg
            .record_trace_path
            .as_deref()
            .map(|p| absolutize(base, p));
        let plan_loaded = crate::prefetch::plan(trace_path.as_deref()).map_err(|e| {
            Error::new(e.kind(), format!("recordTracePath: {e}")).with_path(config_path)
        })?;
        warnings.extend(plan_loaded.warnings.iter().map(|w| format!("{name}: {w}")));
        let prefetch_plan = plan_loaded.value;
        let upper_files = match &cfg.upper {
            Some(u) if u.target.is_some() || u.gzip_index.is_some() => {
                return Err(Error::unsupported(
                    "upper: TurboOCI writable layers (target / gzipIndex) are not supported yet",
                )
                .with_path(config_path));
            }
            Some(u) => u
                .files()
                .map(|(d, i)| (absolutize(base, d), absolutize(base, i))),
            None => None,
        };
        let lowers = cfg.block_lowers();
        let plan = self.plan_lowers(lowers, base, config_path)?;
        let mut prefetch = Prefetch::None;
        let stack = if plan.is_empty() {
            None
        } else if let Plan::Record(path) = &prefetch_plan {
            let recorder = TraceRecorder::start(path).map_err(|e| {
                Error::new(e.kind(), format!("recordTracePath: {e}")).with_path(config_path)
            })?;
            let s = self.open_recording_stack(cfg, &plan, &recorder, config_path)?;
            prefetch = Prefetch::Record(recorder);
            Some(s)
        } else {
            Some(self.open_stack(cfg, &plan, config_path)?)
        };
        let concurrency = self.global.prefetch_config.concurrency.max(1) as usize;
        match (prefetch_plan, &stack) {
            (Plan::Replay(records), Some(s)) => {
                let layers = s.layers().iter().map(|l| l.source().clone()).collect();
                prefetch = Prefetch::Running(crate::prefetch::replay(layers, records, concurrency));
            }
            (Plan::FileList(paths), Some(s)) => {
                let dev: Arc<dyn ReadAt> = s.clone();
                prefetch =
                    Prefetch::Running(crate::prefetch::prefetch_files(dev, paths, concurrency));
            }
            _ => {}
        }
        let lower_size = stack.as_ref().map_or(0, |s| s.vsize());
        let (body, size, read_only) = match &upper_files {
            None => {
                let s = stack
                    .clone()
                    .ok_or_else(|| Error::invalid_input("no layers").with_path(config_path))?;
                (Body::ReadOnly(s), lower_size, true)
            }
            Some((data, index)) => {
                let upper = self.open_upper(data, index, &mut warnings).map_err(|e| {
                    Error::new(e.kind(), format!("upper: {e}")).with_path(config_path)
                })?;
                if stack.is_some() && upper.size() < lower_size {
                    warnings.push(format!(
                        "{name}: upper: the writable layer ({} bytes) is smaller than the \
                         lowers ({lower_size} bytes); the device has the upper's size",
                        upper.size()
                    ));
                }
                let lower = stack.clone().map(|s| s as Arc<dyn ReadAt>);
                let d = StackDevice::new(lower, upper);
                let (size, ro) = (d.size(), BlockDevice::is_read_only(&d));
                (Body::Writable(d), size, ro)
            }
        };
        let info = DeviceInfo {
            config_path: config_path.to_path_buf(),
            size,
            read_only,
            lowers: lowers.len(),
            upper: upper_files,
            result_file: cfg.result_path(config_path),
            warnings,
        };
        if !matches!(prefetch, Prefetch::Record(_)) {
            // Upstream does not download while recording: the trace would miss the reads.
            self.start_downloads(cfg, &plan);
        }
        Ok(ImageDevice {
            info,
            stack,
            body,
            prefetch,
        })
    }

    /// Open the writable upper, refusing one another device of this service has open.
    fn open_upper(
        &self,
        data: &Path,
        index: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<Arc<dyn WritableLayer>> {
        let md = std::fs::metadata(data).map_err(|e| Error::io("stat", e).with_path(data))?;
        let id = (md.dev(), md.ino());
        let lock = || self.uppers.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut uppers = lock();
            uppers.retain(|_, w| w.as_ref().is_none_or(|w| w.strong_count() > 0));
            if uppers.contains_key(&id) {
                return Err(Error::new(
                    obd_core::ErrorKind::AlreadyExists,
                    "this writable layer is already open by another device",
                )
                .with_path(data));
            }
            // Reserved while opening (which may replay a long index) without the lock.
            uppers.insert(id, None);
        }
        match open_writable_with_warnings(data, index) {
            Ok((layer, mut w)) => {
                warnings.append(&mut w);
                let layer: Arc<dyn WritableLayer> = Arc::from(layer);
                lock().insert(id, Some(Arc::downgrade(&layer)));
                Ok(layer)
            }
            Err(e) => {
                lock().remove(&id);
                Err(e)
            }
        }
    }

    /// Resolve every lower to a location and a sharing key.
    fn plan_lowers(
        &self,
        lowers: &[LowerConfig],
        base: &Path,
        config_path: &Path,
    ) -> Result<Vec<Planned>> {
        let mut plan = Vec::with_capacity(lowers.len());
        for (i, l) in lowers.iter().enumerate() {
            let location = locate(l, base).map_err(|e| lower_err(config_path, i, e))?;
            let key = match &location {
                LayerLocation::Local(p) => {
                    let md = std::fs::metadata(p).map_err(|e| {
                        lower_err(config_path, i, Error::io("stat", e).with_path(p))
                    })?;
                    LayerKey::Local {
                        dev: md.dev(),
                        ino: md.ino(),
                    }
                }
                LayerLocation::Remote { digest, .. } => LayerKey::Remote(digest.clone()),
            };
            plan.push(Planned {
                index: i,
                location,
                key,
            });
        }
        Ok(plan)
    }

    /// Open (shared) and merge (shared) the planned lowers.
    fn open_stack(
        &self,
        cfg: &DeviceConfig,
        plan: &[Planned],
        config_path: &Path,
    ) -> Result<Arc<LayerStack>> {
        let keys: Vec<LayerKey> = plan.iter().map(|p| p.key.clone()).collect();
        self.stacks.get_or_try_insert(&keys, || {
            let layers = parallel_map(plan, |p| self.open_lsmt(cfg, p))
                .into_iter()
                .zip(plan)
                .map(|(r, p)| r.map_err(|e| lower_err(config_path, p.index, e)))
                .collect::<Result<Vec<_>>>()?;
            let stack = LayerStack::from_layers(layers).map_err(|e| e.with_path(config_path))?;
            Ok(Arc::new(stack))
        })
    }

    /// A stack of its own for a device that records a trace: each lower's (shared) bytes are
    /// wrapped so the recorder sees every read, and the merged index is not shared.
    fn open_recording_stack(
        &self,
        cfg: &DeviceConfig,
        plan: &[Planned],
        recorder: &Arc<TraceRecorder>,
        config_path: &Path,
    ) -> Result<Arc<LayerStack>> {
        let layers = plan
            .iter()
            .map(|p| {
                let index = u32::try_from(p.index).unwrap_or(u32::MAX);
                self.open_layer(cfg, p)
                    .map(|src| recorder.wrap(index, src))
                    .and_then(LsmtLayer::open)
                    .map_err(|e| lower_err(config_path, p.index, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let stack = LayerStack::from_layers(layers).map_err(|e| e.with_path(config_path))?;
        Ok(Arc::new(stack))
    }

    /// Open one lower as an LSMT layer. A remote lower whose header or index fails its
    /// checks has its cached bytes dropped and is opened once more from the registry.
    fn open_lsmt(&self, cfg: &DeviceConfig, p: &Planned) -> Result<LsmtLayer<Arc<dyn ReadAt>>> {
        let first = self.open_layer(cfg, p).and_then(LsmtLayer::open);
        match (&first, &p.key, &self.remote) {
            (Err(e), LayerKey::Remote(digest), Some(remote)) if is_bad_bytes(e.kind()) => {
                tracing::warn!(
                    digest = %digest,
                    "remote layer failed to open ({e}); dropping its cached bytes and refetching once"
                );
                remote.heal(digest);
                self.open_layer(cfg, p).and_then(LsmtLayer::open)
            }
            _ => first,
        }
    }

    /// The unwrapped bytes of one lower, shared by key.
    fn open_layer(&self, cfg: &DeviceConfig, p: &Planned) -> Result<Arc<dyn ReadAt>> {
        self.layers.get_or_try_insert(&p.key, || match &p.location {
            LayerLocation::Local(path) => Ok(unwrap_blob(Arc::new(FileDevice::open(path)?))?.inner),
            LayerLocation::Remote { digest, size, dir } => {
                let raw = self.open_remote(cfg, p.index, digest, *size, dir.as_deref())?;
                let inner = unwrap_blob(raw)?.inner;
                match &self.remote {
                    Some(r) => Ok(Arc::new(HealingRead::new(inner, r.clone(), digest))),
                    None => Ok(inner),
                }
            }
        })
    }

    /// Start background downloads of the device's remote lowers that have a `dir`.
    fn start_downloads(&self, cfg: &DeviceConfig, plan: &[Planned]) {
        let (Some(remote), Some(url)) = (&self.remote, cfg.repo_blob_url.as_deref()) else {
            return;
        };
        let dl = cfg.effective_download(&self.global);
        if !dl.enable {
            return;
        }
        for p in plan {
            if let LayerLocation::Remote {
                digest,
                size,
                dir: Some(dir),
            } = &p.location
            {
                let req = RemoteBlob {
                    repo_blob_url: url,
                    digest,
                    size: *size,
                    dir: Some(dir),
                    layer_index: p.index,
                };
                remote.start_download(&req, dl);
            }
        }
    }

    /// Status of the remote layers (cache fill, background download).
    pub fn remote_status(&self) -> Vec<crate::source::RemoteLayerStatus> {
        self.remote
            .as_ref()
            .map_or_else(Vec::new, |r| r.layer_status())
    }

    fn open_remote(
        &self,
        cfg: &DeviceConfig,
        index: usize,
        digest: &str,
        size: Option<u64>,
        dir: Option<&Path>,
    ) -> Result<Arc<dyn ReadAt>> {
        let local = match dir {
            Some(d) => format!(
                "not in {} (no {})",
                d.display(),
                crate::config::device::DIR_LAYER_NAMES.join(", ")
            ),
            None => "not local (no file or dir)".to_string(),
        };
        let Some(url) = cfg.repo_blob_url.as_deref() else {
            return Err(Error::invalid_input(format!(
                "layer {digest} is {local}, and the config has no repoBlobUrl to fetch it from"
            )));
        };
        let Some(remote) = &self.remote else {
            let why = self
                .no_remote_reason
                .as_deref()
                .unwrap_or("no remote source configured");
            return Err(Error::unsupported(format!(
                "layer {digest} is {local}, and this service has no registry access to fetch \
                 it ({why})"
            )));
        };
        let req = RemoteBlob {
            repo_blob_url: url,
            digest,
            size,
            dir,
            layer_index: index,
        };
        let raw = remote
            .open_blob(&req)
            .map_err(|e| e.context(format_args!("fetching {}", req.url())))?;
        if let Some(want) = size
            && raw.size() != want
        {
            return Err(Error::corrupt(format!(
                "blob {digest} is {} bytes, but the config says {want}",
                raw.size()
            )));
        }
        Ok(raw)
    }
}

/// An error of lower `i`, prefixed with the config file and the lower.
fn lower_err(config_path: &Path, i: usize, e: Error) -> Error {
    Error::new(e.kind(), format!("lowers[{i}]: {e}")).with_path(config_path)
}

/// Run `f` over `items` on up to [`MAX_OPEN_THREADS`] threads; results in item order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(2, MAX_OPEN_THREADS)
        .min(items.len());
    if items.len() < 4 || threads < 2 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

// Both types are shared across threads by the exports and the daemon.
const _: fn() = || {
    fn is<T: Send + Sync>() {}
    is::<ImageService>();
    is::<ImageDevice>();
};
