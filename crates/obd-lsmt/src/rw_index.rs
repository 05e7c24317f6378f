//! The mutable index of a writable layer: an ordered map of non-overlapping segments where a
//! newer mapping overrides whatever older mappings it overlaps (upstream `Index0`).
//!
//! Positions are 512-byte sectors. Every operation costs O(log n + k), k being the number of
//! segments the operation touches.

use std::collections::BTreeMap;

use crate::index::clip;
use crate::layout::Segment;

/// A mutable, sorted, non-overlapping set of segments keyed by their start sector.
///
/// Inserting a segment trims or splits the older segments it overlaps; trimming the front of a
/// data segment advances its `moffset`, trimming a zeroed one does not (as upstream does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RwIndex {
    map: BTreeMap<u64, Segment>,
    /// Sectors mapped to stored data (not zeroed).
    data_sectors: u64,
}

fn data_len(s: &Segment) -> u64 {
    if s.zeroed { 0 } else { u64::from(s.length) }
}

impl RwIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of sectors mapped to stored data (zeroed segments excluded).
    pub fn data_sectors(&self) -> u64 {
        self.data_sectors
    }

    fn put(&mut self, s: Segment) {
        self.data_sectors += data_len(&s);
        if let Some(old) = self.map.insert(s.offset, s) {
            self.data_sectors -= data_len(&old);
        }
    }

    fn take(&mut self, key: u64) -> Option<Segment> {
        let s = self.map.remove(&key)?;
        self.data_sectors -= data_len(&s);
        Some(s)
    }

    /// Remove every mapping of sectors `[start, end)`: segments inside are dropped, segments
    /// crossing an edge are trimmed (a segment covering the whole range is split in two).
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // A segment starting before `start` that reaches into the range.
        let before = self.map.range(..start).next_back().map(|(_, s)| *s);
        if let Some(s) = before.filter(|s| s.end() > start) {
            self.take(s.offset);
            self.put(clip(&s, s.offset, start));
            if s.end() > end {
                self.put(clip(&s, end, s.end()));
            }
        }
        // Segments starting inside the range.
        let inside: Vec<u64> = self.map.range(start..end).map(|(&k, _)| k).collect();
        for k in inside {
            if let Some(s) = self.take(k)
                && s.end() > end
            {
                self.put(clip(&s, end, s.end()));
            }
        }
    }

    /// Insert `seg`, overriding the overlapped parts of older segments. Empty segments are
    /// ignored.
    pub fn insert(&mut self, seg: Segment) {
        if seg.length == 0 {
            return;
        }
        self.remove(seg.offset, seg.end());
        self.put(seg);
    }

    /// The segments overlapping sectors `[start, end)`, clipped to that range, in order.
    pub fn lookup(&self, start: u64, end: u64) -> impl Iterator<Item = Segment> + '_ {
        let first = if start < end {
            self.map
                .range(..start)
                .next_back()
                .map(|(_, s)| *s)
                .filter(|s| s.end() > start)
        } else {
            None
        };
        let rest = self.map.range(start..end.max(start)).map(|(_, s)| *s);
        first
            .into_iter()
            .chain(rest)
            .map(move |s| clip(&s, start, end))
    }

    /// All segments in order.
    pub fn iter(&self) -> impl Iterator<Item = &Segment> + '_ {
        self.map.values()
    }

    /// A sorted copy of all segments.
    pub fn snapshot(&self) -> Vec<Segment> {
        self.map.values().copied().collect()
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

    /// Sector-level model: for each sector, the (moffset, zeroed) serving it.
    fn model_apply(model: &mut [Option<(u64, bool)>], s: &Segment) {
        for i in 0..u64::from(s.length) {
            let m = if s.zeroed { s.moffset } else { s.moffset + i };
            model[(s.offset + i) as usize] = Some((m, s.zeroed));
        }
    }

    fn flatten(idx: &RwIndex, n: usize) -> Vec<Option<(u64, bool)>> {
        let mut out = vec![None; n];
        let mut prev_end = 0;
        for s in idx.iter() {
            assert!(s.length > 0);
            assert!(s.offset >= prev_end, "overlap at {s:?}");
            prev_end = s.end();
            model_apply(&mut out, s);
        }
        out
    }

    #[test]
    fn insert_splits_and_trims() {
        let mut idx = RwIndex::new();
        idx.insert(seg(0, 100, 1000, false));
        idx.insert(seg(10, 5, 50, false));
        assert_eq!(
            idx.snapshot(),
            vec![
                seg(0, 10, 1000, false),
                seg(10, 5, 50, false),
                seg(15, 85, 1015, false)
            ]
        );
        idx.insert(seg(5, 20, 7, true));
        assert_eq!(
            idx.snapshot(),
            vec![
                seg(0, 5, 1000, false),
                seg(5, 20, 7, true),
                seg(25, 75, 1025, false)
            ]
        );
        // Trimming the front of a zeroed segment keeps its moffset.
        idx.insert(seg(0, 6, 3, false));
        assert_eq!(idx.snapshot()[1], seg(6, 19, 7, true));
        assert_eq!(idx.data_sectors(), 6 + 75);
        let got: Vec<_> = idx.lookup(4, 30).collect();
        assert_eq!(
            got,
            vec![
                seg(4, 2, 7, false),
                seg(6, 19, 7, true),
                seg(25, 5, 1025, false)
            ]
        );
        idx.remove(20, 50);
        assert_eq!(
            idx.snapshot(),
            vec![
                seg(0, 6, 3, false),
                seg(6, 14, 7, true),
                seg(50, 50, 1050, false)
            ]
        );
        assert_eq!(idx.lookup(20, 50).count(), 0);
        assert_eq!(idx.lookup(5, 5).count(), 0);
    }

    #[test]
    fn random_against_sector_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        const N: usize = 300;
        let mut idx = RwIndex::new();
        let mut model = vec![None; N];
        for step in 0..3000 {
            let off = rng.random_range(0..N as u64);
            let len = rng.random_range(1..=(N as u64 - off).min(40)) as u32;
            if rng.random_range(0..5) == 0 {
                idx.remove(off, off + u64::from(len));
                model[off as usize..(off + u64::from(len)) as usize].fill(None);
            } else {
                let s = seg(off, len, rng.random_range(8..10_000), rng.random_bool(0.2));
                idx.insert(s);
                model_apply(&mut model, &s);
            }
            assert_eq!(flatten(&idx, N), model, "step {step}");
            let want: u64 = model
                .iter()
                .filter(|m| matches!(m, Some((_, false))))
                .count() as u64;
            assert_eq!(idx.data_sectors(), want);
            let a = rng.random_range(0..N as u64);
            let b = rng.random_range(a..=N as u64);
            let mut sub = vec![None; N];
            for s in idx.lookup(a, b) {
                assert!(s.offset >= a && s.end() <= b);
                model_apply(&mut sub, &s);
            }
            for i in 0..N {
                let inside = (a..b).contains(&(i as u64));
                assert_eq!(sub[i], if inside { model[i] } else { None });
            }
        }
    }
}
