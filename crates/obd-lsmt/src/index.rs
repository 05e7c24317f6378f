//! The in-memory segment index: an immutable, sorted, non-overlapping list of mappings with a
//! fast search structure, plus the index algorithms of upstream `index.cpp` (merging the
//! indexes of a layer stack, compressing a raw index, splitting over-long segments).
//!
//! All positions are 512-byte sectors.

mod merge;
mod search;

use obd_core::{Error, Result};

use crate::layout::Segment;
pub use merge::{IndexCompressor, compress_raw_index, merge_layers, split_long_segments};
use search::Search;

/// `s` restricted to the sectors `[start, end)`.
///
/// Cutting the front advances `moffset` by the same amount, except for zeroed segments, whose
/// `moffset` carries no data (upstream `forward_offset_to`). When the range does not
/// intersect `s` the result has length 0.
#[inline]
pub fn clip(s: &Segment, start: u64, end: u64) -> Segment {
    let mut r = *s;
    if r.offset < start {
        let delta = (start - r.offset).min(u64::from(r.length));
        r.offset += delta;
        r.length -= delta as u32;
        if !r.zeroed {
            r.moffset += delta;
        }
    }
    if r.end() > end {
        r.length = end.saturating_sub(r.offset) as u32;
    }
    r
}

/// Check that `segs` are sorted by offset, do not overlap and are not empty.
///
/// On failure returns the position of the first bad entry and a description.
pub fn check_sorted(segs: &[Segment]) -> std::result::Result<(), (usize, String)> {
    let mut prev_end = 0u64;
    for (i, s) in segs.iter().enumerate() {
        if s.length == 0 {
            return Err((
                i,
                format!("segment {i} at sector {} has length 0", s.offset),
            ));
        }
        if i > 0 && s.offset < prev_end {
            return Err((
                i,
                format!(
                    "segment {i} (sectors {}..{}) overlaps or precedes the previous one (ending at \
                     sector {prev_end}); the index must be sorted and non-overlapping",
                    s.offset,
                    s.end()
                ),
            ));
        }
        prev_end = s.end();
    }
    Ok(())
}

/// An immutable index of sorted, non-overlapping segments, built for fast lookup.
///
/// The segments are kept as given (tags included); the search runs over a separate copy of
/// the start sectors behind a radix table (see the `search` module), so a point lookup is
/// two table reads and one 16-key SIMD scan, whatever the index size.
#[derive(Debug, Clone)]
pub struct SegmentIndex {
    segs: Vec<Segment>,
    search: Search,
}

impl Default for SegmentIndex {
    fn default() -> Self {
        SegmentIndex {
            segs: Vec::new(),
            search: Search::Empty,
        }
    }
}

impl SegmentIndex {
    /// Build an index over `segments`, which must be sorted by offset, non-overlapping and
    /// of non-zero length ([`ErrorKind::InvalidInput`](obd_core::ErrorKind) otherwise).
    pub fn new(segments: Vec<Segment>) -> Result<Self> {
        check_sorted(&segments).map_err(|(_, msg)| Error::invalid_input(msg))?;
        let starts: Vec<u64> = segments.iter().map(|s| s.offset).collect();
        Ok(SegmentIndex {
            search: Search::build(&starts),
            segs: segments,
        })
    }

    /// An index with no segments.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The segments, sorted by offset.
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Give back the segments.
    pub fn into_segments(self) -> Vec<Segment> {
        self.segs
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Position of the first segment that ends after `sector` (the one containing it, or the
    /// next one after a hole); `len()` when there is none.
    #[inline]
    pub fn position_after(&self, sector: u64) -> usize {
        match self.search.last_le(sector) {
            None => 0,
            Some(i) => match self.segs.get(i) {
                Some(s) if s.end() > sector => i,
                _ => i + 1,
            },
        }
    }

    /// The segment containing `sector`, if any (unclipped).
    #[inline]
    pub fn find(&self, sector: u64) -> Option<&Segment> {
        let i = self.search.last_le(sector)?;
        self.segs.get(i).filter(|s| s.end() > sector)
    }

    /// The segments overlapping sectors `[offset, offset + length)`, clipped to that range,
    /// in order. Holes between them are simply absent.
    pub fn lookup(&self, offset: u64, length: u64) -> Lookup<'_> {
        self.lookup_range(offset, offset.saturating_add(length))
    }

    /// Like [`SegmentIndex::lookup`] with an end sector instead of a length.
    pub fn lookup_range(&self, start: u64, end: u64) -> Lookup<'_> {
        let pos = if start < end {
            self.position_after(start)
        } else {
            self.segs.len()
        };
        Lookup {
            segs: &self.segs,
            pos,
            start,
            end,
        }
    }
}

/// Iterator returned by [`SegmentIndex::lookup`].
#[derive(Debug, Clone)]
pub struct Lookup<'a> {
    segs: &'a [Segment],
    pos: usize,
    start: u64,
    end: u64,
}

impl Iterator for Lookup<'_> {
    type Item = Segment;

    #[inline]
    fn next(&mut self) -> Option<Segment> {
        let s = self.segs.get(self.pos)?;
        if s.offset >= self.end {
            return None;
        }
        self.pos += 1;
        Some(clip(s, self.start, self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, length: u32, moffset: u64, zeroed: bool) -> Segment {
        Segment {
            offset,
            length,
            moffset,
            zeroed,
            tag: 0,
        }
    }

    #[test]
    fn lookup_clips_edges() {
        let idx = SegmentIndex::new(vec![
            seg(0, 8, 8, false),
            seg(10, 10, 100, false),
            seg(20, 5, 7, true),
            seg(40, 4, 200, false),
        ])
        .unwrap();
        let got: Vec<_> = idx.lookup(4, 20).collect();
        assert_eq!(
            got,
            vec![
                seg(4, 4, 12, false),
                seg(10, 10, 100, false),
                seg(20, 4, 7, true)
            ]
        );
        let got: Vec<_> = idx.lookup(22, 20).collect();
        assert_eq!(got, vec![seg(22, 3, 7, true), seg(40, 2, 200, false)]);
        assert_eq!(idx.lookup(8, 2).count(), 0);
        assert_eq!(idx.lookup(44, 100).count(), 0);
        assert_eq!(idx.lookup(0, 0).count(), 0);
        assert_eq!(idx.find(9), None);
        assert_eq!(idx.find(12).map(|s| s.moffset), Some(100));
        assert_eq!(idx.position_after(8), 1);
        assert_eq!(idx.position_after(1000), 4);
    }

    #[test]
    fn rejects_unsorted() {
        assert!(SegmentIndex::new(vec![seg(10, 10, 0, false), seg(15, 1, 0, false)]).is_err());
        assert!(SegmentIndex::new(vec![seg(10, 0, 0, false)]).is_err());
        assert!(SegmentIndex::new(vec![seg(10, 10, 0, false), seg(20, 1, 0, false)]).is_ok());
        let e = SegmentIndex::empty();
        assert_eq!(e.lookup(0, 100).count(), 0);
        assert!(e.find(0).is_none());
    }
}
