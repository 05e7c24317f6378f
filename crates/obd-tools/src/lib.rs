//! The overlaybd-rs command-line tools.
//!
//! Each upstream tool (`overlaybd-create`, `overlaybd-commit`, `overlaybd-zfile`,
//! `overlaybd-merge`) is a thin binary over a module in [`cmd`]; the umbrella `obd` binary
//! exposes the same commands as subcommands, plus `inspect`, `read` and `write`.

pub mod cmd;
pub mod layer;
pub mod output;
pub mod parallel;
pub mod progress;

/// Run a command's entry point, print its error chain to stderr as upstream-style
/// `error: ...` and exit non-zero on failure.
pub fn run_main(f: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    match f() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
