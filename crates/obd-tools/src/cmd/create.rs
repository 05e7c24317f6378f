//! `overlaybd-create` / `obd create`: make an empty writable layer.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_lsmt::{AppendLayer, CreateOptions, SparseLayer};

use super::not_supported_yet;

/// Arguments of `overlaybd-create [opts] data_file index_file vsize_GB`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Data file of the new writable layer (must not exist).
    pub data_file: PathBuf,
    /// Index file of the new writable layer (must not exist).
    pub index_file: PathBuf,
    /// Virtual device size in GiB.
    pub vsize_gb: u64,
    /// UUID of the parent layer.
    #[arg(short = 'u', value_name = "UUID")]
    pub parent_uuid: Option<String>,
    /// Create a sparse writable layer (data written in place; empty index file).
    #[arg(short = 's')]
    pub sparse: bool,
    /// Build a TurboOCI warp layer (not supported yet).
    #[arg(long = "turboOCI", alias = "fastoci")]
    pub turbo_oci: bool,
    /// Create a plain raw image file of the virtual size instead of an LSMT layer.
    #[arg(long)]
    pub raw: bool,
    /// Make an ext4 filesystem on the new layer (not supported yet).
    #[arg(long)]
    pub mkfs: bool,
    /// Hybrid RW mode (not supported yet).
    #[arg(long)]
    pub hybrid: bool,
    /// UUID of the new layer (default: random). An overlaybd-rs extension.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Virtual size in bytes, overriding the GiB argument. An overlaybd-rs extension.
    #[arg(long, value_name = "BYTES")]
    pub vsize_bytes: Option<u64>,
    /// Print details.
    #[arg(long)]
    pub verbose: bool,
}

/// Run the command.
pub fn run(a: &CreateArgs) -> Result<()> {
    if a.turbo_oci {
        return not_supported_yet(
            "--turboOCI",
            "TurboOCI layers arrive with the conversion work",
        );
    }
    if a.mkfs {
        return not_supported_yet("--mkfs", "ext4 creation arrives with the image service");
    }
    if a.hybrid {
        return not_supported_yet("--hybrid", "hybrid RW layers are not implemented");
    }
    if a.sparse && a.raw {
        bail!("-s and --raw cannot be combined");
    }
    let vsize = match a.vsize_bytes {
        Some(b) => b,
        None => a
            .vsize_gb
            .checked_mul(1 << 30)
            .with_context(|| format!("vsize {} GiB is too large", a.vsize_gb))?,
    };
    if vsize == 0 || vsize % 512 != 0 {
        bail!("virtual size must be a positive multiple of 512 bytes, got {vsize}");
    }
    for u in [&a.parent_uuid, &a.uuid].into_iter().flatten() {
        uuid::Uuid::parse_str(u).with_context(|| format!("invalid UUID '{u}'"))?;
    }
    if a.raw {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&a.data_file)
            .with_context(|| format!("cannot create {}", a.data_file.display()))?;
        f.set_len(vsize)?;
        println!(
            "created raw image {} ({vsize} bytes); the index file is not used for raw images",
            a.data_file.display()
        );
        return Ok(());
    }
    let opts = CreateOptions {
        uuid: a.uuid.clone(),
        parent_uuid: a.parent_uuid.clone(),
    };
    if a.sparse {
        SparseLayer::create(&a.data_file, &a.index_file, vsize, opts.clone())?;
    } else {
        AppendLayer::create(&a.data_file, &a.index_file, vsize, opts.clone())?;
    }
    if a.verbose {
        eprintln!(
            "created {} layer: data {}, index {}, vsize {vsize}",
            if a.sparse { "sparse" } else { "append" },
            a.data_file.display(),
            a.index_file.display()
        );
    }
    println!("overlaybd-create has created files SUCCESSFULLY");
    Ok(())
}
