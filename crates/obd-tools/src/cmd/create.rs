//! `overlaybd-create` / `obd create`: make an empty writable layer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_core::{BlockDevice, FileDevice};
use obd_image::mkfs::{MkfsOptions, find_mke2fs, mkfs_ext4};
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
    /// Make an ext4 filesystem (4 KiB blocks) on the new layer, with e2fsprogs' mke2fs.
    #[arg(long)]
    pub mkfs: bool,
    /// Volume label of the filesystem made by --mkfs (at most 16 bytes). An overlaybd-rs
    /// extension.
    #[arg(long, value_name = "LABEL", requires = "mkfs")]
    pub fs_label: Option<String>,
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
    let mkfs = match a.mkfs {
        false => None,
        true => Some(mkfs_options(a)?),
    };
    if a.raw {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&a.data_file)
            .with_context(|| format!("cannot create {}", a.data_file.display()))?;
        f.set_len(vsize)?;
        drop(f);
        if let Some(opts) = &mkfs {
            let dev = FileDevice::open_rw(&a.data_file)?;
            make_fs(
                &dev,
                &a.data_file,
                opts,
                a.verbose,
                &[a.data_file.as_path()],
            )?;
        }
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
    let layer: Box<dyn BlockDevice> = if a.sparse {
        Box::new(SparseLayer::create(
            &a.data_file,
            &a.index_file,
            vsize,
            opts.clone(),
        )?)
    } else {
        Box::new(AppendLayer::create(
            &a.data_file,
            &a.index_file,
            vsize,
            opts.clone(),
        )?)
    };
    if let Some(opts) = &mkfs {
        let files = [a.data_file.as_path(), a.index_file.as_path()];
        make_fs(layer.as_ref(), &a.data_file, opts, a.verbose, &files)?;
    }
    drop(layer);
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

/// Check the --mkfs prerequisites before any file is created.
fn mkfs_options(a: &CreateArgs) -> Result<MkfsOptions> {
    if let Some(l) = &a.fs_label
        && l.len() > 16
    {
        bail!("--fs-label '{l}' is longer than 16 bytes");
    }
    let mke2fs = find_mke2fs().context(
        "--mkfs needs mke2fs, which was not found ($OBD_MKE2FS, PATH, /sbin, /usr/sbin): install \
         e2fsprogs (e.g. `apt-get install e2fsprogs`); no files were created",
    )?;
    Ok(MkfsOptions {
        label: a.fs_label.clone(),
        mke2fs: Some(mke2fs),
    })
}

/// Make the filesystem on the new `dev`; on failure remove the new `files` so that nothing
/// half-made is left behind.
fn make_fs(
    dev: &dyn BlockDevice,
    data_file: &Path,
    opts: &MkfsOptions,
    verbose: bool,
    files: &[&Path],
) -> Result<()> {
    let dir = match data_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match mkfs_ext4(dev, dir, opts) {
        Ok(st) => {
            if verbose {
                eprintln!(
                    "made ext4: {} blocks of 4 KiB, {} bytes of metadata written",
                    st.fs_blocks, st.bytes_written
                );
            }
            Ok(())
        }
        Err(e) => {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            Err(anyhow::Error::new(e).context("--mkfs failed; the new files were removed"))
        }
    }
}
