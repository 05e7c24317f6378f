//! Compaction: write a committed read-only LSMT layer from an index and its data sources,
//! byte-compatible with upstream `compact()` (`overlaybd-commit`, `overlaybd-merge`).
//!
//! ```text
//!   [header: header|data|sealed, index 0/0][data packed in LBA order from byte 4096]
//!   [index: compress_raw_index, padded with INVALID entries to 4 KiB][trailer: data|sealed]
//! ```
//!
//! Upstream copies each data segment in 32 KiB steps and logs one index entry per step, then
//! joins neighbours with `compress_raw_index` (joined length < 16383 sectors). The entry
//! boundaries of the output therefore depend on those 64-sector steps; this module
//! reproduces them exactly while copying data in large chunks (or with `copy_file_range`).

mod emit;

use std::fs::File;
use std::io::Write;

use obd_core::{Error, ReadAt, Result, SECTOR_SIZE};

use crate::index::{IndexCompressor, check_sorted, split_long_segments};
use crate::layout::{
    FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SIZE, HeaderTrailer, INVALID_OFFSET, MAX_MOFFSET,
    NIL_UUID, SEGMENT_SIZE, Segment,
};
use crate::stack::LayerStack;

/// Sectors per upstream copy step (32 KiB).
const STEP_SECTORS: u32 = 64;

/// Identity and description of a layer being committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMeta {
    /// The new layer's UUID (`8-4-4-4-12` hex). `None`: the nil UUID, as upstream writes
    /// when no `--uuid` is given.
    pub uuid: Option<String>,
    /// The parent layer's UUID. `None`: the nil UUID for [`compact`]; the bottom layer's
    /// parent for [`merge_stack`].
    pub parent_uuid: Option<String>,
    /// Virtual size in bytes written to header and trailer ([`merge_stack`]: 0 means the
    /// stack's size).
    pub vsize: u64,
    /// Commit message, at most 256 bytes.
    pub user_tag: Vec<u8>,
}

/// What a compaction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Bytes of layer data copied.
    pub data_bytes: u64,
    /// Index entries written, without padding.
    pub index_entries: u64,
    /// The trailer's `index_size`: entries including padding.
    pub index_size: u64,
    /// Byte offset of the index in the output.
    pub index_offset: u64,
    /// Total size of the output file.
    pub file_size: u64,
}

/// One coalesced data copy: `len` bytes from source `src` at byte `src_off` to output byte
/// `dst_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CopyOp {
    src: u8,
    src_off: u64,
    dst_off: u64,
    len: u64,
}

/// Everything to write, computed before any byte is written.
struct Plan {
    header: [u8; HT_SIZE],
    trailer: [u8; HT_SIZE],
    index: Vec<u8>,
    copies: Vec<CopyOp>,
    stats: CompactStats,
}

fn uuid_text(what: &str, v: Option<&str>) -> Result<String> {
    match v {
        None | Some("") => Ok(NIL_UUID.to_string()),
        Some(u) if crate::layout::is_uuid_text(u) => Ok(u.to_string()),
        Some(u) => Err(Error::invalid_input(format!(
            "{what} '{u}' is not a UUID (8-4-4-4-12 hex digits)"
        ))),
    }
}

fn source_err(src: &dyn ReadAt, e: Error) -> Error {
    match src.path() {
        Some(p) => e.with_path(p),
        None => e,
    }
}

fn plan(segments: &[Segment], sources: &[&dyn ReadAt], meta: &CommitMeta) -> Result<Plan> {
    if sources.len() > 256 {
        return Err(Error::invalid_input(format!(
            "{} sources; at most 256",
            sources.len()
        )));
    }
    check_sorted(segments).map_err(|(_, m)| Error::invalid_input(m))?;
    let uuid = uuid_text("uuid", meta.uuid.as_deref())?;
    let parent_uuid = uuid_text("parent uuid", meta.parent_uuid.as_deref())?;

    let data_start = HT_SIZE as u64 / SECTOR_SIZE;
    let mut pos = data_start; // output sector of the next data byte
    let mut comp = IndexCompressor::new();
    let mut copies: Vec<CopyOp> = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if s.end() > INVALID_OFFSET {
            return Err(Error::invalid_input(format!(
                "segment {i} ends at sector {}, beyond the LSMT address space",
                s.end()
            )));
        }
        let Some(src) = sources.get(usize::from(s.tag)) else {
            return Err(Error::invalid_input(format!(
                "segment {i} has tag {} but there are {} sources",
                s.tag,
                sources.len()
            )));
        };
        if s.zeroed {
            for z in split_long_segments(&[Segment { moffset: pos, ..*s }]) {
                comp.push(z);
            }
            continue;
        }
        let len = u64::from(s.length) * SECTOR_SIZE;
        let src_off = s
            .moffset
            .checked_mul(SECTOR_SIZE)
            .filter(|o| o.checked_add(len).is_some_and(|end| end <= src.size()));
        let Some(src_off) = src_off else {
            let e = Error::corrupt(format!(
                "segment {i} (sector {}) maps {len} bytes at sector {} of source {}, which \
                 has only {} bytes",
                s.offset,
                s.moffset,
                s.tag,
                src.size()
            ))
            .at_offset(s.moffset.saturating_mul(SECTOR_SIZE));
            return Err(source_err(*src, e));
        };
        // Upstream's index entries: one per 32 KiB step of this segment, then joined.
        let mut k = 0u32;
        while k < s.length {
            let n = STEP_SECTORS.min(s.length - k);
            comp.push(Segment {
                offset: s.offset + u64::from(k),
                length: n,
                moffset: pos + u64::from(k),
                zeroed: false,
                tag: s.tag,
            });
            k += n;
        }
        let dst_off = pos * SECTOR_SIZE;
        match copies.last_mut() {
            Some(c) if c.src == s.tag && c.src_off + c.len == src_off => c.len += len,
            _ => copies.push(CopyOp {
                src: s.tag,
                src_off,
                dst_off,
                len,
            }),
        }
        pos += u64::from(s.length);
        if pos > MAX_MOFFSET {
            return Err(Error::invalid_input(
                "layer data exceeds the LSMT file size limit",
            ));
        }
    }

    let entries = comp.finish();
    let per_block = HT_SIZE / SEGMENT_SIZE;
    let padded = entries.len().div_ceil(per_block) * per_block;
    let mut index = Vec::with_capacity(padded * SEGMENT_SIZE);
    for e in entries.iter().chain(std::iter::repeat_n(
        &Segment::PADDING,
        padded - entries.len(),
    )) {
        index.extend_from_slice(&e.encode());
    }

    let index_offset = pos * SECTOR_SIZE;
    let mut ht = HeaderTrailer {
        flags: FLAG_HEADER | FLAG_DATA | FLAG_SEALED,
        index_offset: 0,
        index_size: 0,
        virtual_size: meta.vsize,
        uuid,
        parent_uuid,
        user_tag: meta.user_tag.clone(),
        ..Default::default()
    };
    let header = ht.encode()?;
    ht.flags = FLAG_DATA | FLAG_SEALED;
    ht.index_offset = index_offset;
    ht.index_size = padded as u64;
    let trailer = ht.encode()?;
    let stats = CompactStats {
        data_bytes: (pos - data_start) * SECTOR_SIZE,
        index_entries: entries.len() as u64,
        index_size: padded as u64,
        index_offset,
        file_size: index_offset + index.len() as u64 + HT_SIZE as u64,
    };
    Ok(Plan {
        header,
        trailer,
        index,
        copies,
        stats,
    })
}

/// Write a committed RO layer to `out`, exactly as upstream `compact()` would.
///
/// `segments` must be sorted and non-overlapping; each one's `tag` selects the source in
/// `sources` and its `moffset` is a sector offset inside that source. Data is packed in LBA
/// order from byte 4096; zeroed segments get the current position as `moffset` and no data.
/// Tags are written to the index as given (upstream does so too; use 0 for one source).
/// Everything is validated before the first byte is written.
pub fn compact(
    segments: &[Segment],
    sources: &[&dyn ReadAt],
    out: &mut impl Write,
    meta: &CommitMeta,
) -> Result<CompactStats> {
    let plan = plan(segments, sources, meta)?;
    emit::to_writer(&plan, sources, out)?;
    Ok(plan.stats)
}

/// Like [`compact`], writing with positional I/O at offset 0 of `out` (a regular file opened
/// for writing, not in append mode), which is then cut to the layer's size. Data from sources
/// that are plain file regions ([`ReadAt::file_region`]) is copied in the kernel with
/// `copy_file_range` (reflinked on filesystems that support it).
pub fn compact_to_file(
    segments: &[Segment],
    sources: &[&dyn ReadAt],
    out: &File,
    meta: &CommitMeta,
) -> Result<CompactStats> {
    let plan = plan(segments, sources, meta)?;
    emit::to_file(&plan, sources, out)?;
    Ok(plan.stats)
}

/// The inputs upstream `overlaybd-merge` hands to `compact()`: the merged index with tags
/// counted from the top (upstream numbering: 0 = top layer), the sources in that order, and
/// the metadata defaults (parent from the bottom layer, vsize from the stack).
fn stack_inputs<'a>(
    stack: &'a LayerStack,
    meta: &CommitMeta,
) -> (Vec<Segment>, Vec<&'a dyn ReadAt>, CommitMeta) {
    let n = stack.layers().len();
    let top = (n - 1) as u8;
    let segs: Vec<Segment> = stack
        .index()
        .segments()
        .iter()
        .map(|s| Segment {
            tag: top - s.tag,
            ..*s
        })
        .collect();
    let mut sources = stack.sources();
    sources.reverse();
    let mut meta = meta.clone();
    if meta.vsize == 0 {
        meta.vsize = stack.vsize();
    }
    if meta.parent_uuid.is_none() {
        let bottom = stack
            .layers()
            .first()
            .map(|l| l.header().parent_uuid.clone());
        meta.parent_uuid = bottom.filter(|u| crate::layout::is_uuid_text(u));
    }
    (segs, sources, meta)
}

/// Flatten a whole stack into one committed layer (upstream `merge_files_ro`).
///
/// As upstream, each index entry keeps the number of the layer its data came from, counted
/// from the top (0 = top layer); readers ignore tags of plain layers.
pub fn merge_stack(
    stack: &LayerStack,
    out: &mut impl Write,
    meta: &CommitMeta,
) -> Result<CompactStats> {
    let (segs, sources, meta) = stack_inputs(stack, meta);
    compact(&segs, &sources, out, &meta)
}

/// [`merge_stack`] into a file with positional I/O and `copy_file_range`; see
/// [`compact_to_file`].
pub fn merge_stack_to_file(
    stack: &LayerStack,
    out: &File,
    meta: &CommitMeta,
) -> Result<CompactStats> {
    let (segs, sources, meta) = stack_inputs(stack, meta);
    compact_to_file(&segs, &sources, out, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_check() {
        assert!(crate::layout::is_uuid_text(
            "11111111-1111-4111-8111-111111111111"
        ));
        assert!(crate::layout::is_uuid_text(NIL_UUID));
        assert!(!crate::layout::is_uuid_text(
            "11111111-1111-4111-8111-11111111111"
        ));
        assert!(!crate::layout::is_uuid_text(
            "11111111x1111-4111-8111-111111111111"
        ));
        assert!(!crate::layout::is_uuid_text(
            "g1111111-1111-4111-8111-111111111111"
        ));
        assert_eq!(uuid_text("uuid", None).unwrap(), NIL_UUID);
        assert!(uuid_text("uuid", Some("nope")).is_err());
    }

    #[test]
    fn step_pieces_are_rejoined_below_16383() {
        // One 40000-sector segment: 64-sector steps joined while the sum stays < 16383,
        // i.e. 255 steps = 16320 sectors per entry.
        let data = obd_core::MemDevice::zeroed(40_000 * 512);
        let segs = [Segment {
            offset: 0,
            length: 40_000,
            moffset: 0,
            zeroed: false,
            tag: 0,
        }];
        let p = plan(&segs, &[&data], &CommitMeta::default()).unwrap();
        let lens: Vec<u32> = p
            .index
            .chunks(16)
            .map(|c| Segment::decode(c.try_into().unwrap()))
            .filter(|s| !s.is_padding())
            .map(|s| s.length)
            .collect();
        assert_eq!(lens, vec![16320, 16320, 7360]);
        assert_eq!(p.copies.len(), 1);
        assert_eq!(p.stats.index_size, 256);
    }
}
