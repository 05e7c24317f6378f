//! `obd`: the umbrella command of overlaybd-rs.

use clap::{Parser, Subcommand};
use obd_tools::cmd::{cache, commit, create, daemon, inspect, merge, rw, zfile};

/// overlaybd-rs: build, inspect, read and attach overlaybd layered block images.
#[derive(Parser)]
#[command(name = "obd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty writable layer (same flags as overlaybd-create).
    Create(create::CreateArgs),
    /// Commit a writable layer into a read-only layer, or seal it (as overlaybd-commit).
    Commit(commit::CommitArgs),
    /// Compress, extract or verify a ZFile (as overlaybd-zfile).
    Zfile(zfile::ZFileArgs),
    /// Merge a stack of layers into one layer (as overlaybd-merge; also takes layer files).
    Merge(merge::MergeArgs),
    /// Describe files: tar wrapper, ZFile parameters, LSMT kind, sizes, UUIDs, segments.
    Inspect(inspect::InspectArgs),
    /// Write bytes of a virtual device (layer files bottom to top, or a config) to stdout.
    Read(rw::ReadArgs),
    /// Write stdin into a writable layer at an offset.
    Write(rw::WriteArgs),
    /// Run the image service daemon in the foreground (exports devices over FUSE and NBD).
    Serve(daemon::ServeArgs),
    /// Attach a device from its config.v1.json as a FUSE file or an NBD export.
    Attach(daemon::AttachArgs),
    /// Flush and remove an attached device (by FUSE file, NBD address or id).
    Detach(daemon::DetachArgs),
    /// List the attached devices.
    List(daemon::ListArgs),
    /// Show the daemon's health.
    Status(daemon::StatusArgs),
    /// Stop the daemon: flush and unmount every device (they come back on the next start).
    Stop(daemon::StopArgs),
    /// The shared registry cache: list, evict least recently used, clear.
    Cache(cache::CacheArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    obd_tools::run_main(|| match &cli.command {
        Command::Create(a) => create::run(a),
        Command::Commit(a) => commit::run(a),
        Command::Zfile(a) => zfile::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Read(a) => rw::read(a),
        Command::Write(a) => rw::write(a),
        Command::Serve(a) => daemon::serve(a),
        Command::Attach(a) => daemon::attach(a),
        Command::Detach(a) => daemon::detach(a),
        Command::List(a) => daemon::list(a),
        Command::Status(a) => daemon::status(a),
        Command::Stop(a) => daemon::stop(a),
        Command::Cache(a) => cache::run(a),
    })
}
