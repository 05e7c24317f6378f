//! One module per command. Each has an `Args` struct (clap derive) shared by the drop-in
//! binary and the `obd` subcommand, and a `run` function.

pub mod commit;
pub mod create;
pub mod inspect;
pub mod merge;
pub mod rw;
pub mod zfile;

use anyhow::{Result, bail};

/// Fail with a clear message for an upstream flag whose feature is not in this release.
pub fn not_supported_yet(flag: &str, what: &str) -> Result<()> {
    bail!("{flag} is not supported yet ({what}); no files were changed")
}

/// Parse `--algorithm` / `--bs` the way upstream tools accept them.
pub fn zfile_options(
    algorithm: &str,
    bs_kib: u32,
    threads: usize,
) -> Result<obd_zfile::ZFileOptions> {
    let algorithm = match algorithm {
        "lz4" => obd_zfile::Algorithm::Lz4,
        "zstd" => obd_zfile::Algorithm::Zstd,
        other => bail!("invalid --algorithm '{other}': use lz4 or zstd"),
    };
    if !(4..=64).contains(&bs_kib) || !bs_kib.is_power_of_two() {
        bail!("invalid --bs {bs_kib}: the block size in KiB must be 4, 8, 16, 32 or 64");
    }
    Ok(obd_zfile::ZFileOptions {
        algorithm,
        block_size: bs_kib * 1024,
        crc: true,
        threads,
    })
}

/// Default compression thread count: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
