//! `overlaybd-zfile` / `obd zfile`: compress a file as a ZFile, extract one, or verify one.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use obd_core::{MemDevice, ReadAt};
use obd_zfile::ZFileReader;

use super::{default_threads, zfile_options};
use crate::output::Output;
use crate::progress::bytes_bar;

/// Arguments of `overlaybd-zfile [opts] src [dst]`.
#[derive(Debug, Args)]
pub struct ZFileArgs {
    /// Input file (`-` or absent with --verify: standard input).
    pub src: Option<PathBuf>,
    /// Output file (with -x, `-` writes to standard output).
    pub dst: Option<PathBuf>,
    /// Extract: decompress SRC (a ZFile, tar-wrapped or not) into DST.
    #[arg(short = 'x')]
    pub extract: bool,
    /// Check every block's CRC32C (fails for files written without CRCs).
    #[arg(long)]
    pub verify: bool,
    /// Wrap the compressed output in a one-entry tar (input tar wrappers are always detected).
    #[arg(short = 't')]
    pub tar: bool,
    /// Replace an existing output file.
    #[arg(short = 'f')]
    pub force: bool,
    /// Compression algorithm: lz4 or zstd.
    #[arg(long, default_value = "lz4")]
    pub algorithm: String,
    /// Block size in KiB: 4, 8, 16, 32 or 64.
    #[arg(long = "bs", default_value_t = 4)]
    pub block_size_kib: u32,
    /// Compression threads (default: all cores; the output does not depend on it).
    #[arg(long = "compress_threads", value_name = "N")]
    pub compress_threads: Option<usize>,
    /// Print details.
    #[arg(long)]
    pub verbose: bool,
}

/// Run the command.
pub fn run(a: &ZFileArgs) -> Result<()> {
    if a.verify {
        return verify(a);
    }
    let src = a.src.as_ref().context("missing SRC")?;
    let dst = a.dst.as_ref().context("missing DST")?;
    if a.extract {
        extract(src, dst, a)
    } else {
        compress(src, dst, a)
    }
}

fn verify(a: &ZFileArgs) -> Result<()> {
    let src: Arc<dyn ReadAt> = match a.src.as_deref() {
        None => stdin_source()?,
        Some(p) if p == Path::new("-") => stdin_source()?,
        Some(p) => open_any(p)?,
    };
    let name = a
        .src
        .as_ref()
        .map_or("<stdin>".into(), |p| p.display().to_string());
    let payload = obd_tar::open_payload(src)?;
    let z = ZFileReader::open(payload).with_context(|| format!("{name} is not a valid zfile"))?;
    z.verify_all()
        .with_context(|| format!("{name} is not a valid zfile blob"))?;
    println!("{name} is a valid zfile blob.");
    Ok(())
}

fn open_any(p: &Path) -> Result<Arc<dyn ReadAt>> {
    Ok(Arc::new(obd_core::FileDevice::open(p)?))
}

fn stdin_source() -> Result<Arc<dyn ReadAt>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(Arc::new(MemDevice::from_vec(buf)))
}

fn compress(src: &Path, dst: &Path, a: &ZFileArgs) -> Result<()> {
    let threads = a.compress_threads.unwrap_or_else(default_threads);
    let opts = zfile_options(&a.algorithm, a.block_size_kib, threads)?;
    let input = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let total = input.metadata()?.len();
    let out = Output::create(dst, a.force, a.tar)?;
    let bar = bytes_bar(total, "compress");
    let progress = |n: u64| bar.set_position(n);
    let fin = obd_zfile::compress_reader(input, out.file(), &opts, false, Some(&progress))
        .with_context(|| format!("cannot compress {} into {}", src.display(), dst.display()))?;
    bar.finish_and_clear();
    super::commit::warn_upstream_unreadable(dst, &fin.upstream_unreadable);
    let size = out.finish()?;
    if a.verbose {
        eprintln!(
            "{}: {total} bytes -> {}: {size} bytes",
            src.display(),
            dst.display()
        );
    }
    println!("compress file {} as {} done", src.display(), dst.display());
    Ok(())
}

fn extract(src: &Path, dst: &Path, a: &ZFileArgs) -> Result<()> {
    let file: Arc<dyn ReadAt> = open_any(src)?;
    let payload = obd_tar::open_payload(file)?;
    let z = ZFileReader::open(payload)?;
    let total = z.size();
    let to_stdout = dst == Path::new("-");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        if a.force {
            let _ = std::fs::remove_file(dst);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .with_context(|| format!("cannot create {} (use -f to replace)", dst.display()))?;
        Box::new(BufWriter::with_capacity(1 << 20, f))
    };
    let bar = bytes_bar(total, "extract");
    let threads = a.compress_threads.unwrap_or_else(default_threads).max(1);
    crate::parallel::copy_ordered(&z, 0, total, threads, |chunk| {
        out.write_all(chunk)
            .with_context(|| format!("cannot write {}", dst.display()))?;
        bar.inc(chunk.len() as u64);
        Ok(())
    })?;
    out.flush()?;
    bar.finish_and_clear();
    if total == 0 && !to_stdout && a.verbose {
        eprintln!("note: {} holds an empty file", src.display());
    }
    if !to_stdout {
        println!(
            "decompress file {} as {} done",
            src.display(),
            dst.display()
        );
    }
    Ok(())
}
