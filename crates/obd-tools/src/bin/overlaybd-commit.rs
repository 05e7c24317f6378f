//! `overlaybd-commit`: drop-in replacement for upstream's tool of the same name.

use clap::Parser;
use obd_tools::cmd::commit::{CommitArgs, run};

/// overlaybd-commit (overlaybd-rs): commit or seal a writable layer.
#[derive(Parser)]
#[command(name = "overlaybd-commit", version, about)]
struct Cli {
    #[command(flatten)]
    args: CommitArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| run(&cli.args))
}
