//! `overlaybd-tcmu [GLOBAL_CONFIG]`: the image-service daemon under upstream's daemon name,
//! taking upstream's argument (the global config path). It exports devices through FUSE and
//! NBD (there is no TCMU here); it is `obd serve --service-config GLOBAL_CONFIG`.

use clap::Parser;
use obd_tools::cmd::daemon;

/// overlaybd-rs image service daemon (same as `obd serve`).
#[derive(Parser)]
#[command(name = "overlaybd-tcmu", version, about)]
struct Cli {
    /// The global config.
    #[arg(default_value = daemon::DEFAULT_SERVICE_CONFIG)]
    service_config: std::path::PathBuf,
    /// The control socket, overriding the config's `daemon.socket`.
    #[arg(long, value_name = "PATH")]
    socket: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| {
        obd_daemon::serve(&obd_daemon::ServeOptions {
            service_config: cli.service_config.clone(),
            socket: cli.socket.clone(),
            background: false,
        })
    })
}
