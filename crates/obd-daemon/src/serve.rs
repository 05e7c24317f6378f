//! `obd serve`: the daemon's main loop.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use obd_image::{GlobalConfig, ImageService, RegistrySource};
use rustix::fs::{FlockOperation, flock};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::api::{ApiState, router};
use crate::logging::{self, LogSettings};
use crate::manager::Manager;
use crate::state::StateStore;

/// How `obd serve` was invoked.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The global config (`/etc/overlaybd/overlaybd.json`); built-in defaults when absent.
    pub service_config: PathBuf,
    /// Control socket, overriding the config's `daemon.socket`.
    pub socket: Option<PathBuf>,
    /// Started by `obd attach`: once ready, detach stdout/stderr (the starter waits for
    /// them to close).
    pub background: bool,
}

/// The control socket and state directory a global config names (with overrides).
pub fn daemon_paths(global: &GlobalConfig, socket: Option<&Path>) -> (PathBuf, PathBuf) {
    let sock = socket
        .map(Path::to_path_buf)
        .unwrap_or_else(|| global.daemon.socket.clone());
    (sock, global.daemon.state_dir.clone())
}

/// Take the daemon lock next to the socket: one daemon per socket.
fn lock_instance(socket: &Path) -> Result<File> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another obd daemon is already serving {} (lock {} is held)",
            socket.display(),
            path.display()
        );
    }
    Ok(f)
}

/// Run the daemon until SIGTERM, SIGINT or `POST /v1/shutdown`.
pub fn serve(opts: &ServeOptions) -> Result<()> {
    crate::malloc::pin_mmap_threshold();
    let loaded = GlobalConfig::load_or_default(&opts.service_config)?;
    let global = loaded.value;
    let lc = &global.log_config;
    let log_problem = logging::init(&LogSettings {
        level: lc.log_level,
        file: lc.log_path.clone(),
        max_bytes: u64::from(lc.log_size_mb.max(1)) * 1024 * 1024,
        keep: lc.log_rotate_num as usize,
    });
    if let Some(p) = log_problem {
        warn!("{p}");
    }
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let (socket, state_dir) = daemon_paths(&global, opts.socket.as_deref());
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    let _lock = lock_instance(&socket)?;
    match std::fs::remove_file(&socket) {
        Ok(()) => warn!("removed a stale control socket {}", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove stale socket {}: {e}", socket.display()),
    }
    let state = StateStore::open(&state_dir)?;
    let service_config = opts
        .service_config
        .exists()
        .then(|| opts.service_config.clone());
    let exporter = global.exporter_config.clone();
    let (service, remote) = image_service(global);
    let manager = Arc::new(Manager::new(service, Some(state)));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .thread_keep_alive(Duration::from_secs(1))
        .thread_name("obd-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let res = rt.block_on(async {
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", socket.display()))?;
        let m = manager.clone();
        let restored = tokio::task::spawn_blocking(move || m.restore())
            .await
            .unwrap_or(0);
        info!(
            "obd daemon {} ready on {} (pid {}, {restored} device(s) restored)",
            env!("CARGO_PKG_VERSION"),
            socket.display(),
            std::process::id()
        );
        if opts.background {
            detach_stdio();
        }
        if exporter.enable {
            crate::metrics::spawn_exporter(&exporter).await;
        }
        let shutdown = Arc::new(Notify::new());
        let state = Arc::new(ApiState {
            remote,
            manager: manager.clone(),
            started: Instant::now(),
            service_config,
            shutdown: shutdown.clone(),
        });
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
                _ = shutdown.notified() => info!("shutdown requested: stopping"),
            }
        };
        axum::serve(listener, router(state))
            .with_graceful_shutdown(stop)
            .await
            .context("control API failed")?;
        let m = manager.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || m.shutdown_all()).await {
            error!("shutdown task failed: {e}");
        }
        anyhow::Ok(())
    });
    let _ = std::fs::remove_file(&socket);
    info!("obd daemon stopped");
    rt.shutdown_timeout(Duration::from_secs(5));
    res
}

/// The image service with registry access (client + shared cache) when it can be set up;
/// without it (remote lowers then fail to attach, naming the reason) when not.
fn image_service(global: GlobalConfig) -> (ImageService, Option<Arc<RegistrySource>>) {
    match RegistrySource::from_global(&global) {
        Ok((src, warnings)) => {
            for w in warnings {
                warn!("{w}");
            }
            if let Some(c) = src.cache() {
                let u = c.usage();
                info!(
                    "registry cache {}: {} blob(s), {} of {} bytes used",
                    c.dir().display(),
                    u.blobs,
                    u.used,
                    u.capacity
                );
            }
            let src = Arc::new(src);
            let svc = ImageService::new(global).with_remote(src.clone());
            (svc, Some(src))
        }
        Err(e) => {
            let why = format!("registry access is off: {e}");
            error!("{why}");
            (ImageService::new(global).without_remote(why), None)
        }
    }
}

/// Point stdout and stderr at /dev/null: tells the starting `obd attach` that the daemon
/// is ready (its pipe closes), and keeps later writes from failing.
fn detach_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}
