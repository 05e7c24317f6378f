//! Reading large ranges on several threads: decompression dominates the cost of reading a
//! ZFile-backed device, so sequential readers (extract, `obd read`) fan out over the cores.

use anyhow::Result;
use obd_core::{Error, ReadAt};

/// Bytes each thread reads per step.
const CHUNK: u64 = 4 << 20;

/// Read `src[start..start + len)` in 4 MiB chunks on `threads` threads and hand the chunks to
/// `sink` in order.
pub fn copy_ordered(
    src: &dyn ReadAt,
    start: u64,
    len: u64,
    threads: usize,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut bufs: Vec<Vec<u8>> = (0..threads.max(1))
        .map(|_| vec![0u8; CHUNK as usize])
        .collect();
    let mut done = 0;
    while done < len {
        let round = done;
        let results: Vec<obd_core::Result<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, buf)| {
                    let rel = round + i as u64 * CHUNK;
                    s.spawn(move || {
                        if rel >= len {
                            return Ok(0);
                        }
                        let n = (len - rel).min(CHUNK) as usize;
                        src.read_exact_at(&mut buf[..n], start + rel).map(|()| n)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::corrupt("reader thread panicked")))
                })
                .collect()
        });
        for (buf, r) in bufs.iter().zip(results) {
            let n = r?;
            if n > 0 {
                sink(&buf[..n])?;
                done += n as u64;
            }
        }
    }
    Ok(())
}
