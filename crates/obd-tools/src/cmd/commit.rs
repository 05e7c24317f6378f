//! `overlaybd-commit` / `obd commit`: turn a writable layer into a read-only layer file,
//! optionally ZFile-compressed and tar-wrapped; or seal it in place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_core::ReadAt;
use obd_lsmt::{CommitMeta, CompactStats, LsmtLayer};

use super::{default_threads, not_supported_yet, zfile_options};
use crate::layer::{open_blob, open_writable};
use crate::output::Output;

/// Arguments of `overlaybd-commit [opts] data_file [index_file] [commit_file]`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The writable layer's data file (with --commit_sealed: the sealed file).
    pub data_file: PathBuf,
    /// The writable layer's index file (with --commit_sealed: the output file).
    pub index_file: Option<PathBuf>,
    /// The output file.
    pub commit_file: Option<PathBuf>,
    /// Commit message stored in the layer (at most 256 bytes).
    #[arg(short = 'm', value_name = "MSG")]
    pub message: Option<String>,
    /// UUID of the committed layer.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// UUID of the parent layer (default: taken from the writable layer).
    #[arg(short = 'p', long = "parent-uuid", value_name = "UUID")]
    pub parent_uuid: Option<String>,
    /// Compress the output as a ZFile (with per-block CRC32C and header overwrite).
    #[arg(short = 'z')]
    pub compress: bool,
    /// ZFile compression algorithm: lz4 or zstd.
    #[arg(long, default_value = "lz4")]
    pub algorithm: String,
    /// ZFile block size in KiB: 4, 8, 16, 32 or 64.
    #[arg(long = "bs", default_value_t = 4)]
    pub block_size_kib: u32,
    /// Compression threads (default: all cores; the output does not depend on it).
    #[arg(long = "compress_threads", value_name = "N")]
    pub compress_threads: Option<usize>,
    /// Wrap the output in a one-entry tar, as registry blobs are.
    #[arg(short = 't')]
    pub tar: bool,
    /// Replace an existing output file.
    #[arg(short = 'f')]
    pub force: bool,
    /// Seal the writable layer in place: its data file becomes a read-only layer.
    #[arg(long)]
    pub seal: bool,
    /// The input is a sealed layer file; the second argument is the output.
    #[arg(long = "commit_sealed")]
    pub commit_sealed: bool,
    /// Commit a TurboOCI warp layer (not supported yet).
    #[arg(long = "turboOCI", alias = "fastoci")]
    pub turbo_oci: bool,
    /// Registry upload options.
    #[command(flatten)]
    pub upload: super::UploadArgs,
    /// Print details.
    #[arg(long)]
    pub verbose: bool,
}

/// Run the command.
pub fn run(a: &CommitArgs) -> Result<()> {
    if a.turbo_oci {
        return not_supported_yet(
            "--turboOCI",
            "TurboOCI layers arrive with the conversion work",
        );
    }
    a.upload.reject()?;
    if let Some(m) = &a.message
        && m.len() > obd_lsmt::layout::MAX_USER_TAG
    {
        bail!(
            "commit message is {} bytes; at most 256 are allowed",
            m.len()
        );
    }
    for u in [&a.uuid, &a.parent_uuid].into_iter().flatten() {
        uuid::Uuid::parse_str(u).with_context(|| format!("invalid UUID '{u}'"))?;
    }
    if a.seal {
        return seal(a);
    }
    let threads = a.compress_threads.unwrap_or_else(default_threads);
    let zopts = a
        .compress
        .then(|| zfile_options(&a.algorithm, a.block_size_kib, threads));
    let zopts = zopts.transpose()?;
    let mut meta = CommitMeta {
        uuid: a.uuid.clone(),
        parent_uuid: a.parent_uuid.clone(),
        vsize: 0,
        user_tag: a.message.clone().unwrap_or_default().into_bytes(),
    };
    let (out_path, stats) = if a.commit_sealed {
        let out = a
            .index_file
            .clone()
            .context("--commit_sealed needs: SEALED_FILE OUTPUT")?;
        if a.commit_file.is_some() {
            bail!("--commit_sealed takes two files: SEALED_FILE OUTPUT");
        }
        let blob = open_blob(&a.data_file)?;
        let layer = LsmtLayer::open(blob.inner.clone())?;
        meta.vsize = layer.vsize();
        if meta.parent_uuid.is_none() && obd_lsmt::writable::is_uuid_text(layer.parent_uuid()) {
            meta.parent_uuid = Some(layer.parent_uuid().to_string());
        }
        let segs = layer.segments();
        let src: &[&dyn ReadAt] = &[blob.inner.as_ref()];
        let stats = write_layer(
            &out,
            a.force,
            a.tar,
            zopts,
            &|mut w| obd_lsmt::compact(segs, src, &mut w, &meta),
            &|f| obd_lsmt::compact_to_file(segs, src, f, &meta),
        )?;
        (out, stats)
    } else {
        let index = a.index_file.as_ref().context("missing INDEX_FILE")?;
        let out = a
            .commit_file
            .clone()
            .context("missing COMMIT_FILE (the output)")?;
        let layer = open_writable(&a.data_file, index)?;
        let stats = write_layer(
            &out,
            a.force,
            a.tar,
            zopts,
            &|w| layer.commit(w, &meta),
            &|f| layer.commit_to_file(f, &meta),
        )?;
        (out, stats)
    };
    if a.verbose {
        eprintln!("{}: {stats:?}", out_path.display());
    }
    println!("overlaybd-commit has committed files SUCCESSFULLY");
    Ok(())
}

fn seal(a: &CommitArgs) -> Result<()> {
    let index = a
        .index_file
        .as_ref()
        .context("--seal needs: DATA_FILE INDEX_FILE")?;
    if a.commit_file.is_some() || a.compress || a.tar {
        bail!("--seal works in place on DATA_FILE INDEX_FILE; it takes no output, -z or -t");
    }
    obd_lsmt::seal_in_place(&a.data_file, index)?;
    println!("{} sealed", a.data_file.display());
    Ok(())
}

/// How a committed layer is produced: streamed into any writer, or written positionally
/// into a regular file (which lets the data move with `copy_file_range`).
pub type ToWriter<'a> = &'a dyn Fn(&mut dyn Write) -> obd_core::Result<CompactStats>;
/// See [`ToWriter`].
pub type ToFile<'a> = &'a dyn Fn(&File) -> obd_core::Result<CompactStats>;

/// Write a committed layer to `path`: plain, or as a ZFile (with header overwrite, as
/// `overlaybd-commit -z` does), optionally tar-wrapped. Warns when a ZFile has blocks that
/// upstream's reader cannot fetch.
pub fn write_layer(
    path: &Path,
    force: bool,
    tar: bool,
    zfile: Option<obd_zfile::ZFileOptions>,
    to_writer: ToWriter<'_>,
    to_file: ToFile<'_>,
) -> Result<CompactStats> {
    let out = Output::create(path, force, tar)?;
    let stats = match zfile {
        None if !tar => to_file(out.file())?,
        None => {
            let mut w = BufWriter::with_capacity(1 << 20, out.file());
            let stats = to_writer(&mut w)?;
            w.flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
            stats
        }
        Some(opts) => {
            let w = BufWriter::with_capacity(1 << 20, out.file());
            let mut zw = obd_zfile::ZFileWriter::new(w, opts)?;
            let stats = to_writer(&mut zw)?;
            let fin = zw.finish()?;
            warn_upstream_unreadable(path, &fin.upstream_unreadable);
            let mut w = fin.writer;
            w.flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
            drop(w);
            out.write_payload_at(&fin.header, 0)?;
            stats
        }
    };
    out.finish()?;
    Ok(stats)
}

/// Tell the user about ZFile blocks upstream overlaybd could not read back.
pub fn warn_upstream_unreadable(path: &Path, blocks: &[u64]) {
    if let Some(first) = blocks.first() {
        eprintln!(
            "warning: {}: {} block(s) (first: block {first}) did not compress below 64 KiB; \
             this file reads fine with overlaybd-rs but upstream overlaybd cannot read those \
             blocks. Use --bs 32 or less for files upstream must read.",
            path.display(),
            blocks.len()
        );
    }
}
