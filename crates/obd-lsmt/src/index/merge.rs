//! Index algorithms: stacking layers, compressing a raw index, splitting long segments.

use super::clip;
use crate::layout::{MAX_SEGMENT_SECTORS, Segment};

/// Append the pieces of `lower[*j..]` that fall inside the gap `[start, end)`, clipped to it.
///
/// `*j` only moves forward: a lower segment that reaches past `end` stays current because
/// the next gap may cover its tail.
fn fill_gap(lower: &[Segment], j: &mut usize, start: u64, end: u64, out: &mut Vec<Segment>) {
    while let Some(s) = lower.get(*j) {
        if s.end() <= start {
            *j += 1;
            continue;
        }
        if s.offset >= end {
            return;
        }
        out.push(clip(s, start, end));
        if s.end() > end {
            return;
        }
        *j += 1;
    }
}

/// Overlay `upper` (tagged `tag`) on `lower`: upper segments win, lower ones show through the
/// holes. Linear in `lower.len() + upper.len()`.
fn overlay(lower: &[Segment], upper: &[Segment], tag: u8) -> Vec<Segment> {
    let mut out = Vec::with_capacity(lower.len() + upper.len());
    let mut j = 0usize;
    let mut pos = 0u64;
    for u in upper {
        if u.offset > pos {
            fill_gap(lower, &mut j, pos, u.offset, &mut out);
        }
        out.push(Segment { tag, ..*u });
        pos = pos.max(u.end());
    }
    fill_gap(lower, &mut j, pos, u64::MAX, &mut out);
    out
}

/// Merge the indexes of a layer stack into one.
///
/// `layers` go bottom to top; each must be sorted and non-overlapping. An upper segment
/// shadows whatever lies below it, zeroed ones included (a discard hides lower data). The
/// result is sorted and non-overlapping, each piece tagged with the number of the layer it
/// comes from (0 = lowest) and clipped where an upper layer cuts it (data `moffset`s move
/// with the cut). Adjacent pieces are never joined, even within one layer.
///
/// Cost is linear in the sizes of each (result so far, next layer) pair.
///
/// # Panics
/// With more than 256 layers (tags are 8 bits; stacks allow at most 255).
pub fn merge_layers(layers: &[&[Segment]]) -> Vec<Segment> {
    assert!(
        layers.len() <= 256,
        "merge_layers: {} layers, at most 256",
        layers.len()
    );
    let mut acc: Vec<Segment> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let tag = i as u8;
        acc = if i == 0 {
            layer.iter().map(|s| Segment { tag, ..*s }).collect()
        } else {
            overlay(&acc, layer, tag)
        };
    }
    acc
}

/// Whether upstream's `compress_raw_index` joins `b` onto `a`: contiguous in the device and
/// in the file (a zeroed segment "ends" at its own `moffset`), same zeroed state and tag, and
/// a combined length strictly below 16383 sectors (`< MAX_LENGTH`, as in `index.cpp`).
#[inline]
fn joinable(a: &Segment, b: &Segment) -> bool {
    let mend = if a.zeroed {
        a.moffset
    } else {
        a.moffset + u64::from(a.length)
    };
    a.end() == b.offset
        && mend == b.moffset
        && a.zeroed == b.zeroed
        && a.tag == b.tag
        && u64::from(a.length) + u64::from(b.length) < u64::from(MAX_SEGMENT_SECTORS)
}

/// Streaming form of [`compress_raw_index`]: push segments in order, take the result.
#[derive(Debug, Default, Clone)]
pub struct IndexCompressor {
    cur: Option<Segment>,
    out: Vec<Segment>,
}

impl IndexCompressor {
    /// An empty compressor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the next segment (in LBA order).
    #[inline]
    pub fn push(&mut self, s: Segment) {
        match &mut self.cur {
            Some(c) if joinable(c, &s) => c.length += s.length,
            _ => {
                if let Some(c) = self.cur.replace(s) {
                    self.out.push(c);
                }
            }
        }
    }

    /// Number of segments emitted so far, including the one being built.
    pub fn len(&self) -> usize {
        self.out.len() + usize::from(self.cur.is_some())
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compressed index.
    pub fn finish(mut self) -> Vec<Segment> {
        if let Some(c) = self.cur.take() {
            self.out.push(c);
        }
        self.out
    }
}

/// Upstream `compress_raw_index`: greedily join each segment onto the previous one when they
/// are contiguous in LBA and `moffset`, have the same tag and zeroed state, and the joined
/// length stays below 16383 sectors.
pub fn compress_raw_index(segs: &[Segment]) -> Vec<Segment> {
    let mut c = IndexCompressor::new();
    for s in segs {
        c.push(*s);
    }
    c.finish()
}

/// Split segments longer than the on-disk maximum (16383 sectors) into maximal pieces
/// (as upstream does for sparse files); data pieces advance `moffset`, zeroed ones keep it.
pub fn split_long_segments(segs: &[Segment]) -> Vec<Segment> {
    let max = MAX_SEGMENT_SECTORS;
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        let mut s = *s;
        while s.length > max {
            out.push(Segment { length: max, ..s });
            s.offset += u64::from(max);
            s.length -= max;
            if !s.zeroed {
                s.moffset += u64::from(max);
            }
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, length: u32, moffset: u64, zeroed: bool, tag: u8) -> Segment {
        Segment {
            offset,
            length,
            moffset,
            zeroed,
            tag,
        }
    }

    /// Per-sector model of a stack: the (layer, moffset, zeroed) that serves each sector.
    fn model(layers: &[&[Segment]], size: u64) -> Vec<Option<(u8, u64, bool)>> {
        let mut m = vec![None; size as usize];
        for (i, l) in layers.iter().enumerate() {
            for s in *l {
                for k in 0..u64::from(s.length) {
                    let mo = if s.zeroed { 0 } else { s.moffset + k };
                    m[(s.offset + k) as usize] = Some((i as u8, mo, s.zeroed));
                }
            }
        }
        m
    }

    #[test]
    fn merge_matches_per_sector_model() {
        let l0 = [
            seg(0, 10, 100, false, 0),
            seg(20, 30, 200, false, 0),
            seg(60, 5, 9, true, 0),
        ];
        let l1 = [
            seg(5, 10, 300, false, 0),
            seg(25, 2, 9, true, 0),
            seg(30, 2, 400, false, 0),
        ];
        let l2 = [seg(0, 1, 500, false, 0), seg(40, 30, 600, false, 0)];
        let layers: [&[Segment]; 3] = [&l0, &l1, &l2];
        let merged = merge_layers(&layers);
        crate::index::check_sorted(&merged).unwrap();
        let mut got = vec![None; 80];
        for s in &merged {
            for k in 0..u64::from(s.length) {
                let mo = if s.zeroed { 0 } else { s.moffset + k };
                got[(s.offset + k) as usize] = Some((s.tag, mo, s.zeroed));
            }
        }
        assert_eq!(got, model(&layers, 80));
        // Not joined across layers, cut pieces keep their own tags.
        assert_eq!(merged[0], seg(0, 1, 500, false, 2));
        assert_eq!(merged[1], seg(1, 4, 101, false, 0));
        assert_eq!(merged[2], seg(5, 10, 300, false, 1));
    }

    #[test]
    fn compress_condition_is_strict() {
        // 16382 total joins, 16383 does not.
        let a = [seg(0, 16000, 8, false, 0), seg(16000, 382, 16008, false, 0)];
        assert_eq!(compress_raw_index(&a), vec![seg(0, 16382, 8, false, 0)]);
        let b = [seg(0, 16000, 8, false, 0), seg(16000, 383, 16008, false, 0)];
        assert_eq!(compress_raw_index(&b).len(), 2);
        // Zeroed: contiguous means same moffset.
        let z = [
            seg(0, 4, 33, true, 0),
            seg(4, 4, 33, true, 0),
            seg(8, 4, 33, false, 0),
        ];
        assert_eq!(
            compress_raw_index(&z),
            vec![seg(0, 8, 33, true, 0), seg(8, 4, 33, false, 0)]
        );
        // Different tags are never joined.
        let t = [seg(0, 4, 8, false, 0), seg(4, 4, 12, false, 1)];
        assert_eq!(compress_raw_index(&t).len(), 2);
    }

    #[test]
    fn split() {
        let s = split_long_segments(&[seg(0, 40000, 8, false, 0), seg(40000, 20000, 5, true, 0)]);
        assert_eq!(
            s,
            vec![
                seg(0, 16383, 8, false, 0),
                seg(16383, 16383, 8 + 16383, false, 0),
                seg(32766, 7234, 8 + 32766, false, 0),
                seg(40000, 16383, 5, true, 0),
                seg(56383, 3617, 5, true, 0),
            ]
        );
    }
}
