//! The in-memory block index: where each compressed block starts.
//!
//! Upstream keeps a u64 base per group of `65536 / block_size` blocks plus u16 deltas, which
//! silently wraps when a group's blocks are large. This table keeps a u64 base per group of
//! [`GROUP`] blocks plus u32 deltas (4.125 bytes per block), and every entry is bounded by
//! [`max_entry`], so the deltas cannot overflow.

use obd_core::Error;

use crate::layout::max_entry;

/// Blocks per u64 base.
const GROUP: usize = 64;

/// Start offsets of `n` blocks and the end of the last one.
#[derive(Debug, Clone, Default)]
pub struct JumpTable {
    bases: Vec<u64>,
    deltas: Vec<u32>,
}

impl JumpTable {
    /// Build from index entries (stored length of each block, CRC included), with block 0
    /// starting at `data_start`. Rejects entries of 0 bytes, of 4 bytes or less when blocks
    /// carry CRCs, and larger than [`max_entry`]`(block_size)`. On error, the message names
    /// the block; the returned index lets the caller compute the entry's file offset.
    pub fn build(
        entries: &[u32],
        data_start: u64,
        block_size: u32,
        crc: bool,
    ) -> std::result::Result<JumpTable, (usize, Error)> {
        let min = if crc { 5 } else { 1 };
        let max = max_entry(block_size);
        let mut bases = Vec::with_capacity(entries.len() / GROUP + 1);
        let mut deltas = Vec::with_capacity(entries.len() + 1);
        let mut pos = data_start;
        let mut base = data_start;
        for i in 0..=entries.len() {
            if i % GROUP == 0 {
                bases.push(pos);
                base = pos;
            }
            // pos - base is at most (GROUP - 1) * max, far below u32::MAX.
            deltas.push((pos - base) as u32);
            let Some(&e) = entries.get(i) else { break };
            if e < min || e > max {
                return Err((
                    i,
                    Error::corrupt(format!(
                        "index entry of block {i} is {e} bytes (valid: {min}..={max})"
                    )),
                ));
            }
            pos = pos.saturating_add(u64::from(e));
        }
        Ok(JumpTable { bases, deltas })
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.deltas.len().saturating_sub(1)
    }

    /// File offset where block `i` starts; `offset(blocks())` is the end of the last block.
    ///
    /// # Panics
    /// If `i` is greater than [`blocks`](Self::blocks) (a caller bug, not bad file data).
    pub fn offset(&self, i: usize) -> u64 {
        self.bases[i / GROUP] + u64::from(self.deltas[i])
    }

    /// Stored length (CRC included) of block `i`.
    ///
    /// # Panics
    /// If `i` is not below [`blocks`](Self::blocks).
    pub fn len(&self, i: usize) -> u64 {
        self.offset(i + 1) - self.offset(i)
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks() == 0
    }

    /// File offset just past the last block.
    pub fn end(&self) -> u64 {
        self.offset(self.blocks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_prefix_sums() {
        let entries: Vec<u32> = (0..300u32).map(|i| 5 + (i * 7919) % 9000).collect();
        let t = JumpTable::build(&entries, 512, 4096, true).unwrap();
        assert_eq!(t.blocks(), 300);
        let mut pos = 512u64;
        for (i, &e) in entries.iter().enumerate() {
            assert_eq!(t.offset(i), pos);
            assert_eq!(t.len(i), u64::from(e));
            pos = pos.saturating_add(u64::from(e));
        }
        assert_eq!(t.end(), pos);
    }

    #[test]
    fn large_blocks_are_fine() {
        // 64 KiB incompressible blocks exceed upstream's u16 deltas at smaller block sizes;
        // here any valid entry works.
        let entries = vec![65536 + 300; 1000];
        let t = JumpTable::build(&entries, 512, 65536, true).unwrap();
        assert_eq!(t.end(), 512 + 1000 * (65536 + 300));
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(
            JumpTable::build(&[10, 4, 10], 512, 4096, true)
                .unwrap_err()
                .0,
            1
        );
        assert_eq!(
            JumpTable::build(&[10, 0], 512, 4096, false).unwrap_err().0,
            1
        );
        assert!(JumpTable::build(&[4], 512, 4096, false).is_ok());
        assert_eq!(
            JumpTable::build(&[u32::MAX], 512, 4096, false)
                .unwrap_err()
                .0,
            0
        );
        let empty = JumpTable::build(&[], 512, 4096, true).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.end(), 512);
    }
}
