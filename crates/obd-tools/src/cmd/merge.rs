//! `overlaybd-merge` / `obd merge`: flatten a stack of layers into one layer.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_core::ReadAt;
use obd_lsmt::{CommitMeta, LayerStack};

use super::commit::write_layer;
use super::{default_threads, zfile_options};
use crate::layer::open_blob;
use obd_image::DeviceConfig;

/// Arguments of `overlaybd-merge [opts] image_config_path output`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// A `config.v1.json` whose lowers are merged (or, with `obd merge`, layer files
    /// bottom to top), followed by the output file.
    #[arg(required = true, num_args = 2..)]
    pub inputs_and_output: Vec<PathBuf>,
    /// ZFile-compress the output (default true; `--compress=false` writes plain LSMT).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub compress: bool,
    /// ZFile algorithm (overlaybd-rs extension; upstream always uses lz4).
    #[arg(long, default_value = "lz4")]
    pub algorithm: String,
    /// ZFile block size in KiB (overlaybd-rs extension; upstream uses 4).
    #[arg(long = "bs", default_value_t = 4)]
    pub block_size_kib: u32,
    /// UUID of the merged layer.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Wrap the output in a one-entry tar.
    #[arg(short = 't')]
    pub tar: bool,
    /// Replace an existing output file.
    #[arg(short = 'f')]
    pub force: bool,
    /// Registry upload options.
    #[command(flatten)]
    pub upload: super::UploadArgs,
    /// Global service config (accepted for compatibility; merging local layers needs none).
    #[arg(long = "service_config_path", value_name = "FILE")]
    pub service_config_path: Option<PathBuf>,
    /// Print details.
    #[arg(long)]
    pub verbose: bool,
}

/// Run the command.
pub fn run(a: &MergeArgs) -> Result<()> {
    a.upload.reject()?;
    let (output, inputs) = a.inputs_and_output.split_last().context("missing output")?;
    let files = match inputs {
        [cfg] if cfg.extension().is_some_and(|e| e == "json") => {
            let c = DeviceConfig::load(cfg)?;
            let (lowers, upper) = c.layer_files()?;
            if upper.is_some() && a.verbose {
                eprintln!("note: the config's writable upper is not merged (only lowers are)");
            }
            lowers
        }
        files => files.to_vec(),
    };
    if files.is_empty() {
        bail!("nothing to merge: no lower layers");
    }
    let mut layers: Vec<Arc<dyn ReadAt>> = Vec::with_capacity(files.len());
    for f in &files {
        layers.push(open_blob(f)?.inner);
    }
    let stack = LayerStack::open(layers)?;
    let meta = CommitMeta {
        uuid: a.uuid.clone(),
        ..CommitMeta::default()
    };
    let zopts = if a.compress {
        Some(zfile_options(
            &a.algorithm,
            a.block_size_kib,
            default_threads(),
        )?)
    } else {
        None
    };
    let stats = write_layer(
        output,
        a.force,
        a.tar,
        zopts,
        &|mut w| obd_lsmt::merge_stack(&stack, &mut w, &meta),
        &|f| obd_lsmt::merge_stack_to_file(&stack, f, &meta),
    )?;
    if a.verbose {
        eprintln!(
            "merged {} layers into {}: {stats:?}",
            files.len(),
            output.display()
        );
    }
    println!("overlaybd-merge has merged files SUCCESSFULLY");
    Ok(())
}
