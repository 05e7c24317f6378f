//! `obd serve|attach|detach|list|status`: the image service daemon and its standalone CLI.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_daemon::{AttachRequest, Client, ExportOptions, ExportSpec, ServeOptions};
use obd_image::GlobalConfig;

/// Upstream's global config path.
pub const DEFAULT_SERVICE_CONFIG: &str = "/etc/overlaybd/overlaybd.json";

/// Which daemon to talk to.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// The global config (its `daemon.socket` names the control socket; built-in defaults
    /// when the file is absent).
    #[arg(long = "service-config", alias = "service_config_path", value_name = "FILE",
          default_value = DEFAULT_SERVICE_CONFIG, global = true)]
    pub service_config: PathBuf,
    /// The daemon's control socket, overriding the global config.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

impl ConnArgs {
    /// The control socket to use.
    pub fn socket(&self) -> Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        let g = GlobalConfig::load_or_default(&self.service_config)?;
        Ok(g.value.daemon.socket)
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::new(self.socket()?))
    }
}

/// `obd serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Internal: started by `obd attach`; detach stdout/stderr once ready.
    #[arg(long, hide = true)]
    pub background: bool,
}

/// Run the daemon in the foreground until SIGTERM/SIGINT.
pub fn serve(a: &ServeArgs) -> Result<()> {
    obd_daemon::serve(&ServeOptions {
        service_config: a.conn.service_config.clone(),
        socket: a.conn.socket.clone(),
        background: a.background,
    })
}

/// `obd attach CONFIG (--fuse PATH | --nbd ADDR)`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("export").required(true).args(["fuse", "nbd"])))]
pub struct AttachArgs {
    /// The device's config.v1.json.
    pub config: PathBuf,
    /// Export as this regular file (a FUSE mount on the file itself; created when missing).
    #[arg(long, value_name = "PATH")]
    pub fuse: Option<PathBuf>,
    /// Export over NBD at `unix:SOCKET` or `tcp:HOST:PORT`.
    #[arg(long, value_name = "ADDR")]
    pub nbd: Option<String>,
    /// Device id (default: the export path or address).
    #[arg(long)]
    pub id: Option<String>,
    /// FUSE: bypass the page cache of the FUSE file (FOPEN_DIRECT_IO).
    #[arg(long)]
    pub direct_io: bool,
    /// FUSE: worker threads.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Fail instead of starting a daemon when none is running.
    #[arg(long)]
    pub no_start: bool,
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

/// Attach a device; prints the export target once it is ready.
pub fn attach(a: &AttachArgs) -> Result<()> {
    let config = absolute(&a.config)?;
    if !config.is_file() {
        bail!("{}: no such config file", config.display());
    }
    let export = match (&a.fuse, &a.nbd) {
        (Some(p), None) => ExportSpec::Fuse(absolute(p)?),
        (None, Some(addr)) => ExportSpec::Nbd(normalize_nbd(addr)?),
        _ => bail!("give exactly one of --fuse PATH and --nbd ADDR"),
    };
    let socket = a.conn.socket()?;
    if !a.no_start {
        let exe = std::env::current_exe().context("cannot find the obd executable")?;
        let svc = absolute(&a.conn.service_config)?;
        if obd_daemon::ensure_daemon(&exe, &socket, &svc)? {
            eprintln!("started the obd daemon on {}", socket.display());
        }
    }
    let entry = Client::new(&socket).attach(&AttachRequest {
        config,
        export,
        id: a.id.clone(),
        options: ExportOptions {
            direct_io: a.direct_io,
            threads: a.threads,
        },
    })?;
    println!("{}", entry.export.target());
    Ok(())
}

/// Accept `unix:PATH` (made absolute), `tcp:HOST:PORT`, and `nbd+unix`-less shorthand errors.
fn normalize_nbd(addr: &str) -> Result<String> {
    if let Some(p) = addr.strip_prefix("unix:") {
        return Ok(format!("unix:{}", absolute(Path::new(p))?.display()));
    }
    if addr.starts_with("tcp:") {
        return Ok(addr.to_string());
    }
    bail!("invalid --nbd '{addr}': use unix:SOCKET or tcp:HOST:PORT")
}

/// `obd detach TARGET`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The FUSE file, NBD address/socket, or device id.
    pub target: String,
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Flush and remove a device.
pub fn detach(a: &DetachArgs) -> Result<()> {
    let client = a.conn.client()?;
    let mut target = a.target.clone();
    if target.starts_with('/') || target.starts_with('.') {
        target = absolute(Path::new(&target))?.display().to_string();
    } else if let Some(p) = target.strip_prefix("unix:") {
        target = format!("unix:{}", absolute(Path::new(p))?.display());
    }
    let e = client.detach(&target)?;
    eprintln!("detached {} ({})", e.id, e.export);
    Ok(())
}

/// `obd list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Show the attached devices.
pub fn list(a: &ListArgs) -> Result<()> {
    let devs = a.conn.client()?.list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&devs)?);
        return Ok(());
    }
    if devs.is_empty() {
        eprintln!("no devices attached");
        return Ok(());
    }
    println!(
        "{:<24} {:<6} {:>14} {:>6}  {:<40} CONFIG",
        "ID", "MODE", "SIZE", "LOWERS", "EXPORT"
    );
    for d in devs {
        println!(
            "{:<24} {:<6} {:>14} {:>6}  {:<40} {}",
            d.id,
            if d.read_only { "ro" } else { "rw" },
            d.size,
            d.lowers,
            d.export.to_string(),
            d.config.display()
        );
    }
    Ok(())
}

/// `obd status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Print the daemon's health and its remote layers (cache fill, background download
/// progress); fails when no daemon answers.
pub fn status(a: &StatusArgs) -> Result<()> {
    let c = a.conn.client()?;
    let h = c.health()?;
    let layers = c.layers()?;
    let v = serde_json::json!({ "health": h, "remoteLayers": layers });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `obd stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Which daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Ask the daemon to flush every device, unmount every export and exit (the attached devices
/// stay recorded and come back when it starts again). Waits until it is gone.
pub fn stop(a: &StopArgs) -> Result<()> {
    let socket = a.conn.socket()?;
    Client::new(&socket).shutdown()?;
    for _ in 0..1200 {
        if !socket.exists() {
            eprintln!("the obd daemon on {} stopped", socket.display());
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "the obd daemon on {} did not stop within 60 s",
        socket.display()
    )
}
