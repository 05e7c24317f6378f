//! Per-block compression, decompression and CRC, with reused contexts.

use std::cell::RefCell;

use obd_core::{Error, Result};

use crate::layout::{Algorithm, block_crc};

/// The zstd level upstream uses (fixed).
pub const ZSTD_LEVEL: i32 = 3;

/// Bytes of output space one block of `len` bytes may need, including its 4-byte CRC.
pub(crate) fn block_bound(algo: Algorithm, len: usize) -> usize {
    let bound = match algo {
        Algorithm::Lz4 => lz4_flex::block::get_maximum_output_size(len),
        Algorithm::Zstd => zstd::zstd_safe::compress_bound(len),
    };
    bound + 4
}

/// Compresses blocks one at a time into caller-provided space, reusing its zstd context.
pub(crate) struct BlockCompressor {
    algo: Algorithm,
    crc: bool,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl BlockCompressor {
    pub(crate) fn new(algo: Algorithm, crc: bool) -> Result<Self> {
        let zstd = match algo {
            Algorithm::Lz4 => None,
            Algorithm::Zstd => Some(
                zstd::bulk::Compressor::new(ZSTD_LEVEL)
                    .map_err(|e| Error::io("create zstd compressor", e))?,
            ),
        };
        Ok(BlockCompressor { algo, crc, zstd })
    }

    /// Compress `src` into `dst` (at least [`block_bound`] bytes), append the CRC when
    /// enabled, and return the stored length.
    pub(crate) fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        let room = dst.len().saturating_sub(4);
        let out = &mut dst[..room];
        let n = match (&mut self.zstd, self.algo) {
            (Some(z), _) => z
                .compress_to_buffer(src, out)
                .map_err(|e| Error::io("zstd compress", e))?,
            _ => lz4_flex::block::compress_into(src, out)
                .map_err(|e| Error::invalid_input(format!("lz4 compress: {e}")))?,
        };
        if self.crc {
            let crc = block_crc(&dst[..n]);
            dst[n..n + 4].copy_from_slice(&crc.to_le_bytes());
            Ok(n + 4)
        } else {
            Ok(n)
        }
    }
}

thread_local! {
    static ZSTD_DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decompress one block into exactly `dst`; fails unless it yields `dst.len()` bytes.
/// The message says what went wrong; the caller adds file and offset.
pub(crate) fn decompress_block(algo: Algorithm, src: &[u8], dst: &mut [u8]) -> Result<()> {
    let got = match algo {
        Algorithm::Lz4 => lz4_flex::block::decompress_into(src, dst)
            .map_err(|e| Error::corrupt(format!("lz4 decompression failed: {e}")))?,
        Algorithm::Zstd => {
            // Take the context out so a nested ZFile read on this thread cannot clash.
            let mut ctx = ZSTD_DCTX.with(|c| c.borrow_mut().take());
            let d = match &mut ctx {
                Some(d) => d,
                None => ctx.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| Error::io("create zstd decompressor", e))?,
                ),
            };
            let r = d.decompress_to_buffer(src, dst);
            ZSTD_DCTX.with(|c| *c.borrow_mut() = ctx);
            r.map_err(|e| Error::corrupt(format!("zstd decompression failed: {e}")))?
        }
    };
    if got != dst.len() {
        return Err(Error::corrupt(format!(
            "block decompressed to {got} bytes, expected {}",
            dst.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_algorithms() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i % 251) as u8 ^ (i / 97) as u8)
            .collect();
        for algo in [Algorithm::Lz4, Algorithm::Zstd] {
            for crc in [false, true] {
                let mut c = BlockCompressor::new(algo, crc).unwrap();
                let mut out = vec![0u8; block_bound(algo, data.len())];
                let n = c.compress(&data, &mut out).unwrap();
                let body = if crc { n - 4 } else { n };
                if crc {
                    let stored = u32::from_le_bytes(out[body..n].try_into().unwrap());
                    assert_eq!(stored, block_crc(&out[..body]));
                }
                let mut back = vec![0u8; data.len()];
                decompress_block(algo, &out[..body], &mut back).unwrap();
                assert_eq!(back, data);
                // Wrong expected length is an error, not a short or padded block.
                let mut short = vec![0u8; data.len() - 1];
                assert!(decompress_block(algo, &out[..body], &mut short).is_err());
                let mut long = vec![0u8; data.len() + 1];
                assert!(decompress_block(algo, &out[..body], &mut long).is_err());
            }
        }
    }
}
