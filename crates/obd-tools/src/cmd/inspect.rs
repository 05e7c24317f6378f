//! `obd inspect FILE...`: say what a file is (tar wrapper, ZFile, LSMT kind) and its vital
//! numbers, one `key: value` per line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use obd_lsmt::LsmtLayer;

use crate::layer::{describe_flags, lsmt_header, open_blob};

/// Arguments of `obd inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Files to describe.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Run the command.
pub fn run(a: &InspectArgs) -> Result<()> {
    for (i, f) in a.files.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(f)?);
    }
    Ok(())
}

/// Describe one file.
pub fn describe(path: &Path) -> Result<String> {
    let mut s = String::new();
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    writeln!(s, "file: {}", path.display())?;
    writeln!(s, "size: {size}")?;
    let blob = open_blob(path)?;
    match blob.tar_offset {
        Some(off) => writeln!(
            s,
            "tar: payload at offset {off}, {} bytes",
            blob.payload_size
        )?,
        None => writeln!(s, "tar: no")?,
    }
    match &blob.zfile {
        Some(z) => {
            let info = z.info();
            writeln!(s, "zfile: yes")?;
            writeln!(s, "zfile.algorithm: {}", info.algorithm.name())?;
            writeln!(s, "zfile.block_size: {}", info.block_size)?;
            writeln!(s, "zfile.blocks: {}", info.blocks)?;
            writeln!(s, "zfile.crc: {}", yes_no(info.verify))?;
            writeln!(
                s,
                "zfile.header_overwrite: {}",
                yes_no(info.header_overwrite)
            )?;
            writeln!(s, "zfile.compressed_size: {}", info.compressed_size)?;
            writeln!(s, "zfile.original_size: {}", info.original_size)?;
            if info.original_size > 0 {
                let ratio = info.compressed_size as f64 / info.original_size as f64;
                writeln!(s, "zfile.ratio: {:.3}", ratio)?;
            }
        }
        None => writeln!(s, "zfile: no")?,
    }
    let inner = blob.inner.as_ref();
    let Some(h) = lsmt_header(inner) else {
        writeln!(s, "lsmt: no (content is not an LSMT layer)")?;
        return Ok(s);
    };
    let sealed = h.is_sealed() || crate::layer::has_sealed_trailer(inner);
    let kind = if h.is_sealed() {
        "read-only (committed)"
    } else if sealed {
        "read-only (writable layer sealed in place)"
    } else if !h.is_data_file() {
        "writable layer index file"
    } else if h.is_sparse_rw() {
        "writable layer data file (sparse)"
    } else {
        "writable layer data file (append)"
    };
    writeln!(s, "lsmt: {kind}")?;
    writeln!(
        s,
        "lsmt.header_flags: {:#x} ({})",
        h.flags,
        describe_flags(&h)
    )?;
    if sealed {
        let layer = LsmtLayer::open(blob.inner.clone())?;
        let segs = layer.segments();
        let zeroed: u64 = segs
            .iter()
            .filter(|g| g.zeroed)
            .map(|g| u64::from(g.length))
            .sum();
        let data: u64 = segs
            .iter()
            .filter(|g| !g.zeroed)
            .map(|g| u64::from(g.length))
            .sum();
        writeln!(s, "lsmt.vsize: {}", layer.vsize())?;
        writeln!(s, "lsmt.uuid: {}", layer.uuid())?;
        writeln!(s, "lsmt.parent_uuid: {}", layer.parent_uuid())?;
        writeln!(s, "lsmt.segments: {}", segs.len())?;
        writeln!(s, "lsmt.data_bytes: {}", data * 512)?;
        writeln!(s, "lsmt.zeroed_bytes: {}", zeroed * 512)?;
        if !layer.user_tag().is_empty() {
            writeln!(
                s,
                "lsmt.message: {}",
                String::from_utf8_lossy(layer.user_tag())
            )?;
        }
    } else {
        writeln!(s, "lsmt.vsize: {}", h.virtual_size)?;
        writeln!(s, "lsmt.uuid: {}", h.uuid)?;
        writeln!(s, "lsmt.parent_uuid: {}", h.parent_uuid)?;
    }
    Ok(s)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
