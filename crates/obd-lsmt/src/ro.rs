//! Read-only LSMT layers: committed (compacted) files and sealed writable data files.
//!
//! ```text
//!   [header 4 KiB][data ...][index: 16-byte entries][(garbage)][trailer 4 KiB]
//!                                ^ trailer.index_offset          ^ file size - 4096
//! ```

use std::path::Path;

use obd_core::{Error, ReadAt, Result, SECTOR_SIZE, check_range};

use crate::index::SegmentIndex;
use crate::layout::{HT_SIZE, HeaderTrailer, SEGMENT_SIZE, Segment};
use crate::read::read_mapped;

/// Largest `index_size` a read-only layer may declare (upstream `MAX_LSMT_RO_INDEX_SIZE`).
pub const MAX_RO_INDEX_SIZE: u64 = 1_000_000;

/// First sector a mapping may point at: data starts after the 4 KiB header.
const DATA_START_SECTOR: u64 = HT_SIZE as u64 / SECTOR_SIZE;

/// A sealed LSMT file opened read-only: its header, trailer and index, and the virtual
/// device it describes, readable through [`ReadAt`].
#[derive(Debug)]
pub struct LsmtLayer<R> {
    src: R,
    header: HeaderTrailer,
    trailer: HeaderTrailer,
    index: SegmentIndex,
}

fn read_ht<R: ReadAt>(src: &R, offset: u64, what: &str) -> Result<HeaderTrailer> {
    let mut buf = vec![0u8; HT_SIZE];
    src.read_exact_at(&mut buf, offset)
        .map_err(|e| e.context(format!("reading LSMT {what}")))?;
    HeaderTrailer::decode(&buf).map_err(|e| e.context(format!("LSMT {what}")).at_offset(offset))
}

/// Decode and check the index area: drop padding and empty entries, zero the tags, and
/// require sorted, non-overlapping entries whose data lies in `[8, data_end)` sectors.
fn load_index(raw: &[u8], index_offset: u64, data_end: u64) -> Result<Vec<Segment>> {
    let mut segs = Vec::with_capacity(raw.len() / SEGMENT_SIZE);
    let mut prev_end = 0u64;
    for (i, chunk) in raw.chunks_exact(SEGMENT_SIZE).enumerate() {
        let mut b = [0u8; SEGMENT_SIZE];
        b.copy_from_slice(chunk);
        let mut s = Segment::decode(&b);
        if s.is_padding() || s.length == 0 {
            continue;
        }
        let at = index_offset + (i * SEGMENT_SIZE) as u64;
        if !segs.is_empty() && s.offset < prev_end {
            return Err(Error::corrupt(format!(
                "index entry {i} (sectors {}..{}) overlaps or precedes the previous entry \
                 (ending at sector {prev_end}); the index must be sorted and non-overlapping",
                s.offset,
                s.end()
            ))
            .at_offset(at));
        }
        let ok = if s.zeroed {
            s.moffset >= DATA_START_SECTOR && s.moffset <= data_end
        } else {
            s.moffset >= DATA_START_SECTOR && s.moffset + u64::from(s.length) <= data_end
        };
        if !ok {
            let what = if s.zeroed {
                format!(
                    "zeroed index entry {i} (sector {}) has moffset {}",
                    s.offset, s.moffset
                )
            } else {
                format!(
                    "index entry {i} (sector {}, {} sectors) maps file sectors {}..{}",
                    s.offset,
                    s.length,
                    s.moffset,
                    s.moffset + u64::from(s.length)
                )
            };
            return Err(Error::corrupt(format!(
                "{what}, outside the data area {DATA_START_SECTOR}..{data_end} (sectors) between \
                 header and index"
            ))
            .at_offset(at));
        }
        // Tags are runtime-only: upstream ignores what is on disk for plain layers.
        s.tag = 0;
        prev_end = s.end();
        segs.push(s);
    }
    Ok(segs)
}

impl<R: ReadAt> LsmtLayer<R> {
    /// Open a sealed LSMT file: a committed layer or a sealed writable data file.
    ///
    /// Checks the header (magic, header flag), the trailer at `size - 4096` (trailer, data
    /// file, sealed), the index bounds (at most [`MAX_RO_INDEX_SIZE`] entries, between
    /// `index_offset` and the trailer) and every entry (sorted, non-overlapping, data inside
    /// the area between header and index). Errors name the file and the byte offset.
    pub fn open(src: R) -> Result<Self> {
        match Self::load(&src) {
            Ok((header, trailer, index)) => Ok(LsmtLayer {
                src,
                header,
                trailer,
                index,
            }),
            Err(e) => Err(match src.path() {
                Some(p) => e.with_path(p),
                None => e,
            }),
        }
    }

    fn load(src: &R) -> Result<(HeaderTrailer, HeaderTrailer, SegmentIndex)> {
        let size = src.size();
        if size < 2 * HT_SIZE as u64 {
            return Err(Error::corrupt(format!(
                "file is {size} bytes, too small for an LSMT header and trailer ({} bytes)",
                2 * HT_SIZE
            ))
            .at_offset(size));
        }
        let header = read_ht(src, 0, "header")?;
        if !header.is_header() {
            return Err(Error::corrupt(format!(
                "LSMT header has flags {:#x} without the header bit",
                header.flags
            ))
            .at_offset(28));
        }
        let trailer_off = size - HT_SIZE as u64;
        let trailer = read_ht(src, trailer_off, "trailer")?;
        if !(trailer.is_trailer() && trailer.is_data_file() && trailer.is_sealed()) {
            return Err(Error::corrupt(format!(
                "LSMT trailer flags {:#x}: need trailer, data file and sealed (not a sealed \
                 or committed layer?)",
                trailer.flags
            ))
            .at_offset(trailer_off + 28));
        }
        if trailer.index_size > MAX_RO_INDEX_SIZE {
            return Err(Error::corrupt(format!(
                "LSMT trailer declares {} index entries, more than the {MAX_RO_INDEX_SIZE} \
                 allowed",
                trailer.index_size
            ))
            .at_offset(trailer_off + 40));
        }
        let index_offset = trailer.index_offset;
        let index_bytes = trailer.index_size * SEGMENT_SIZE as u64;
        if index_offset > trailer_off || index_bytes > trailer_off - index_offset {
            return Err(Error::corrupt(format!(
                "LSMT index ({} entries at offset {index_offset}) does not fit before the \
                 trailer at {trailer_off}",
                trailer.index_size
            ))
            .at_offset(trailer_off + 32));
        }
        if index_bytes > 0 && index_offset < HT_SIZE as u64 {
            return Err(Error::corrupt(format!(
                "LSMT index offset {index_offset} lies inside the header"
            ))
            .at_offset(trailer_off + 32));
        }
        let raw = src
            .read_vec(index_offset, index_bytes as usize)
            .map_err(|e| e.context("reading LSMT index"))?;
        let segs = load_index(&raw, index_offset, index_offset / SECTOR_SIZE)?;
        let index = SegmentIndex::new(segs).map_err(|e| e.at_offset(index_offset))?;
        Ok((header, trailer, index))
    }

    /// Size in bytes of the virtual device (from the trailer).
    pub fn vsize(&self) -> u64 {
        self.trailer.virtual_size
    }

    /// This layer's UUID text (from the trailer; may be empty or the nil UUID).
    pub fn uuid(&self) -> &str {
        &self.trailer.uuid
    }

    /// The parent layer's UUID text (from the trailer).
    pub fn parent_uuid(&self) -> &str {
        &self.trailer.parent_uuid
    }

    /// The commit message.
    pub fn user_tag(&self) -> &[u8] {
        &self.trailer.user_tag
    }

    /// The mappings, sorted, padding dropped, tags 0.
    pub fn segments(&self) -> &[Segment] {
        self.index.segments()
    }

    /// The searchable index.
    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    /// The header at offset 0.
    pub fn header(&self) -> &HeaderTrailer {
        &self.header
    }

    /// The trailer at the end of the file.
    pub fn trailer(&self) -> &HeaderTrailer {
        &self.trailer
    }

    /// The layer file.
    pub fn source(&self) -> &R {
        &self.src
    }

    /// Give back the layer file.
    pub fn into_source(self) -> R {
        self.src
    }
}

impl<R: ReadAt> ReadAt for LsmtLayer<R> {
    fn size(&self) -> u64 {
        self.vsize()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.vsize(), offset, buf.len() as u64).map_err(|e| match self.path() {
            Some(p) => e.context("LSMT layer").with_path(p),
            None => e,
        })?;
        let src: &dyn ReadAt = &self.src;
        read_mapped(&self.index, buf, offset, |tag| (tag == 0).then_some(src))
    }

    fn path(&self) -> Option<&Path> {
        self.src.path()
    }
}
