//! `overlaybd-create`: drop-in replacement for upstream's tool of the same name.

use clap::Parser;
use obd_tools::cmd::create::{CreateArgs, run};

/// overlaybd-create (overlaybd-rs): make an empty writable layer.
#[derive(Parser)]
#[command(name = "overlaybd-create", version, about)]
struct Cli {
    #[command(flatten)]
    args: CreateArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| run(&cli.args))
}
