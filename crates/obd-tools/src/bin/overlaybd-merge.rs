//! `overlaybd-merge`: drop-in replacement for upstream's tool of the same name.

use clap::Parser;
use obd_tools::cmd::merge::{MergeArgs, run};

/// overlaybd-merge (overlaybd-rs): merge a stack of layers into one layer.
#[derive(Parser)]
#[command(name = "overlaybd-merge", version, about)]
struct Cli {
    #[command(flatten)]
    args: MergeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| run(&cli.args))
}
