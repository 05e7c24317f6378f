//! `overlaybd-zfile`: drop-in replacement for upstream's tool of the same name.

use clap::Parser;
use obd_tools::cmd::zfile::{ZFileArgs, run};

/// overlaybd-zfile (overlaybd-rs): compress, extract or verify ZFile blobs.
#[derive(Parser)]
#[command(name = "overlaybd-zfile", version, about)]
struct Cli {
    #[command(flatten)]
    args: ZFileArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| run(&cli.args))
}
