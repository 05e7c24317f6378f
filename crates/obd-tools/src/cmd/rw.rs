//! `obd read` and `obd write`: the bytes of a virtual device on stdout, and writes into a
//! writable layer from stdin, without any block device.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use obd_core::BlockDevice;

use crate::layer::{open_device, open_writable};

/// Arguments of `obd read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Layer files bottom to top (committed, sealed, ZFile, tar-wrapped; a writable layer as
    /// DATA INDEX last), or one `config.v1.json`.
    #[arg(required = true)]
    pub layers: Vec<PathBuf>,
    /// Byte offset in the virtual device.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Number of bytes (default: to the end of the device).
    #[arg(long = "len")]
    pub len: Option<u64>,
    /// The global config whose registry, credential and cache settings apply to a config
    /// with remote lowers.
    #[arg(long = "service-config", value_name = "FILE",
          default_value = obd_image::config::global::DEFAULT_GLOBAL_CONFIG_PATH)]
    pub service_config: PathBuf,
}

/// Arguments of `obd write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The writable layer's data file.
    pub data_file: PathBuf,
    /// The writable layer's index file.
    pub index_file: PathBuf,
    /// Byte offset in the virtual device (a multiple of 512).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Pad the input with zeros to a multiple of 512 bytes instead of refusing it.
    #[arg(long)]
    pub pad: bool,
}

/// Copy the device range to stdout.
pub fn read(a: &ReadArgs) -> Result<()> {
    let dev = open_device(&a.layers, &a.service_config)?;
    let size = obd_core::ReadAt::size(dev.as_ref());
    if a.offset > size {
        bail!(
            "--offset {} is beyond the end of the device ({size} bytes)",
            a.offset
        );
    }
    let len = a.len.unwrap_or(size - a.offset);
    if a.offset.checked_add(len).is_none_or(|end| end > size) {
        bail!(
            "--offset {} --len {len} runs past the end of the device ({size} bytes)",
            a.offset
        );
    }
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = crate::parallel::copy_ordered(dev.as_ref(), a.offset, len, threads, |chunk| {
        out.write_all(chunk)
            .context("cannot write to standard output")
    })
    .and_then(|()| out.flush().context("cannot write to standard output"));
    match r {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        r => r,
    }
}

/// A closed stdout (e.g. `obd read ... | head`) ends the copy quietly.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Write stdin into the writable layer at `--offset`, then flush it durably.
pub fn write(a: &WriteArgs) -> Result<()> {
    if !a.offset.is_multiple_of(512) {
        bail!(
            "--offset {} is not a multiple of 512 (LSMT writes whole sectors)",
            a.offset
        );
    }
    let layer = open_writable(&a.data_file, &a.index_file)?;
    let dev: &dyn BlockDevice = layer.as_ref();
    let size = dev.size();
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = a.offset;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut n = n;
        if !n.is_multiple_of(512) {
            if !a.pad {
                bail!(
                    "input length is not a multiple of 512 bytes; pass --pad to zero-fill the \
                     last sector"
                );
            }
            let padded = n.next_multiple_of(512);
            buf[n..padded].fill(0);
            n = padded;
        }
        if off + n as u64 > size {
            bail!("write of {n} bytes at {off} runs past the end of the device ({size} bytes)");
        }
        dev.write_at(&buf[..n], off)?;
        off += n as u64;
    }
    dev.flush()?;
    eprintln!("wrote {} bytes at offset {}", off - a.offset, a.offset);
    Ok(())
}

/// Fill `buf` as far as the input allows; returns bytes read (short only at EOF).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read standard input"),
        }
    }
    Ok(n)
}
