//! Replaying an append-only layer's index log at open, and refusing sealed data files.

use obd_core::{Error, ReadAt, Result, SECTOR_SIZE};

use crate::layout::{HT_SIZE, HeaderTrailer, SEGMENT_SIZE, Segment};
use crate::rw::MAX_RW_INDEX_SIZE;
use crate::rw_index::RwIndex;
use crate::writable::LayerFile;

/// First data sector: data follows the 4 KiB header.
const DATA_START: u64 = HT_SIZE as u64 / SECTOR_SIZE;
/// Bytes of the index log read at once when replaying.
const REPLAY_CHUNK: u64 = 1 << 20;

/// Refuse a data file that already ends in a sealed trailer matching its header.
pub(crate) fn check_not_sealed(df: &LayerFile, h: &HeaderTrailer) -> Result<()> {
    let len = df.size();
    if len < 2 * HT_SIZE as u64 {
        return Ok(());
    }
    let at = len - HT_SIZE as u64;
    let Ok(t) = HeaderTrailer::decode(&df.read_vec(at, HT_SIZE)?) else {
        return Ok(());
    };
    let index_bytes = t
        .index_size
        .saturating_mul(SEGMENT_SIZE as u64)
        .div_ceil(SECTOR_SIZE)
        * SECTOR_SIZE;
    if t.is_trailer()
        && t.is_sealed()
        && t.uuid == h.uuid
        && t.index_offset.checked_add(index_bytes) == Some(at)
    {
        return Err(Error::invalid_input(
            "this writable layer has been sealed; open it as a read-only layer",
        )
        .at_offset(at)
        .with_path(&df.path));
    }
    Ok(())
}

/// Replay the index log of `xf`: returns the index, the byte offset after the last whole
/// entry, and the size of a torn tail. Entries must map data inside `[8, data_sectors)`.
pub(crate) fn replay(xf: &LayerFile, data_sectors: u64) -> Result<(RwIndex, u64, u64)> {
    let start = HT_SIZE as u64;
    let log = xf.size() - start;
    let whole = log / SEGMENT_SIZE as u64;
    if whole > MAX_RW_INDEX_SIZE {
        return Err(Error::corrupt(format!(
            "index log holds {whole} entries, more than the {MAX_RW_INDEX_SIZE} allowed"
        ))
        .with_path(&xf.path));
    }
    let end = start + whole * SEGMENT_SIZE as u64;
    let mut idx = RwIndex::new();
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(REPLAY_CHUNK);
        let buf = xf.read_vec(pos, n as usize)?;
        for (i, c) in buf.chunks_exact(SEGMENT_SIZE).enumerate() {
            let mut b = [0u8; SEGMENT_SIZE];
            b.copy_from_slice(c);
            let mut s = Segment::decode(&b);
            if s.is_padding() || s.length == 0 {
                continue;
            }
            let mend = s.moffset + if s.zeroed { 0 } else { u64::from(s.length) };
            if s.moffset < DATA_START || mend > data_sectors {
                let at = pos + (i * SEGMENT_SIZE) as u64;
                return Err(Error::corrupt(format!(
                    "index entry {} (sector {}, {} sectors) maps data file sectors {}..{mend}, \
                     outside the data area {DATA_START}..{data_sectors}",
                    (at - start) / SEGMENT_SIZE as u64,
                    s.offset,
                    s.length,
                    s.moffset
                ))
                .at_offset(at)
                .with_path(&xf.path));
            }
            s.tag = 0;
            idx.insert(s);
        }
        pos += n;
    }
    Ok((idx, end, log % SEGMENT_SIZE as u64))
}
