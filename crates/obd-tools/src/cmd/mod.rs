//! One module per command. Each has an `Args` struct (clap derive) shared by the drop-in
//! binary and the `obd` subcommand, and a `run` function.

pub mod cache;
pub mod commit;
pub mod create;
pub mod daemon;
pub mod inspect;
pub mod merge;
pub mod rw;
pub mod zfile;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Fail with a clear message for an upstream flag whose feature is not in this release.
pub fn not_supported_yet(flag: &str, what: &str) -> Result<()> {
    bail!("{flag} is not supported yet ({what}); no files were changed")
}

/// Upstream's registry upload flags (`overlaybd-commit`, `overlaybd-merge`).
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Stream the output to a registry blob upload URL (not supported yet).
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// Upload chunk size in KiB (with --upload).
    #[arg(long = "upload_bs", value_name = "KB")]
    pub upload_bs: Option<u64>,
    /// Registry credential file (with --upload).
    #[arg(long = "cred_file_path", value_name = "FILE")]
    pub cred_file_path: Option<PathBuf>,
    /// TLS client key (with --upload).
    #[arg(long = "tls_key_path", value_name = "FILE")]
    pub tls_key_path: Option<PathBuf>,
    /// TLS client certificate (with --upload).
    #[arg(long = "tls_cert_path", value_name = "FILE")]
    pub tls_cert_path: Option<PathBuf>,
}

impl UploadArgs {
    /// Fail clearly when any upload flag is given: uploading is not in this release.
    pub fn reject(&self) -> Result<()> {
        let any = self.upload.is_some()
            || self.upload_bs.is_some()
            || self.cred_file_path.is_some()
            || self.tls_key_path.is_some()
            || self.tls_cert_path.is_some();
        if any {
            return not_supported_yet(
                "--upload (and --upload_bs, --cred_file_path, --tls_key_path, --tls_cert_path)",
                "registry upload arrives with the registry client",
            );
        }
        Ok(())
    }
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
