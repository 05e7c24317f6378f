//! The search structure over sorted segment start sectors: a radix table in front of a
//! plain key array.
//!
//! The key range is cut into about `n / 4` equal buckets (a power-of-two width, so the bucket
//! of `x` is `x >> shift`); `table[b]` holds how many keys lie below bucket `b`. A lookup
//! reads two table entries, which depend only on `x` (no chain of dependent probes), then
//! counts the keys `<= x` in one fixed window of 16 keys starting at the bucket (a branch-free
//! loop the compiler turns into SIMD compares). A bucket holding more than 16 keys (clustered
//! segments) falls back to a binary search inside that bucket only.
//! Keys are `u32` when every start fits (devices below 2 TiB), halving the memory touched.

/// Keys compared at once in a bucket.
const WINDOW: usize = 16;
/// Average keys per bucket the table is sized for.
const KEYS_PER_BUCKET: usize = 4;

/// Key types the search supports.
pub(super) trait Key: Copy + Ord + std::fmt::Debug {
    /// The padding key, larger than any stored key.
    const PAD: Self;
    /// `v` as a key; only called with values that fit.
    fn from_u64(v: u64) -> Self;
}

impl Key for u32 {
    const PAD: Self = u32::MAX;
    fn from_u64(v: u64) -> Self {
        u32::try_from(v).unwrap_or(u32::MAX)
    }
}

impl Key for u64 {
    const PAD: Self = u64::MAX;
    fn from_u64(v: u64) -> Self {
        v
    }
}

/// The keys, padded with [`WINDOW`] `PAD`s, and the bucket table.
#[derive(Debug, Clone)]
pub(super) struct Radix<K> {
    keys: Vec<K>,
    /// `table[b]`: number of keys below `b << shift`; one entry past the last bucket.
    table: Vec<u32>,
    shift: u32,
    max: u64,
}

impl<K: Key> Radix<K> {
    fn build(starts: &[u64]) -> Self {
        let n = starts.len();
        let max = starts.last().copied().unwrap_or(0);
        let want = (n / KEYS_PER_BUCKET).max(1) as u64;
        let mut shift = 0u32;
        while (max >> shift) >= want {
            shift += 1;
        }
        let buckets = (max >> shift) as usize + 1;
        let mut table = Vec::with_capacity(buckets + 1);
        let mut i = 0usize;
        for b in 0..=buckets as u64 {
            let bound = b << shift;
            while i < n && starts[i] < bound {
                i += 1;
            }
            table.push(i as u32);
        }
        let mut keys: Vec<K> = starts.iter().map(|&s| K::from_u64(s)).collect();
        keys.extend(std::iter::repeat_n(K::PAD, WINDOW));
        Radix {
            keys,
            table,
            shift,
            max,
        }
    }

    /// Index of the last key `<= x`, or `None` when every key is greater.
    #[inline]
    fn last_le(&self, x: u64) -> Option<usize> {
        let n = self.keys.len() - WINDOW;
        if x >= self.max {
            return n.checked_sub(1);
        }
        let b = (x >> self.shift) as usize;
        let (Some(&lo), Some(&hi)) = (self.table.get(b), self.table.get(b + 1)) else {
            return None;
        };
        let (lo, hi) = (lo as usize, hi as usize);
        let xk = K::from_u64(x);
        let pos = match self.keys.get(lo..lo + WINDOW) {
            Some(w) if hi - lo <= WINDOW => {
                // Keys past the bucket are >= the next bucket's bound > x: they count 0.
                lo + w.iter().map(|&k| u32::from(k <= xk)).sum::<u32>() as usize
            }
            _ => {
                lo + self
                    .keys
                    .get(lo..hi)
                    .map_or(0, |s| s.partition_point(|&k| k <= xk))
            }
        };
        pos.checked_sub(1)
    }
}

/// The search structure of a [`super::SegmentIndex`].
#[derive(Debug, Clone)]
pub(super) enum Search {
    /// No keys.
    Empty,
    /// All keys below `u32::MAX`.
    Narrow(Radix<u32>),
    /// Wide keys.
    Wide(Radix<u64>),
}

impl Search {
    /// Build over sorted `starts`.
    pub(super) fn build(starts: &[u64]) -> Search {
        match starts.last() {
            None => Search::Empty,
            Some(&max) if max < u64::from(u32::MAX) => Search::Narrow(Radix::build(starts)),
            Some(_) => Search::Wide(Radix::build(starts)),
        }
    }

    /// Index of the last start `<= x`, or `None` when `x` precedes every start.
    #[inline]
    pub(super) fn last_le(&self, x: u64) -> Option<usize> {
        match self {
            Search::Empty => None,
            Search::Narrow(r) => r.last_le(x),
            Search::Wide(r) => r.last_le(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(starts: &[u64], x: u64) -> Option<usize> {
        starts.partition_point(|&s| s <= x).checked_sub(1)
    }

    fn check(starts: &[u64], extra: &[u64]) {
        let t = Search::build(starts);
        let top = starts.last().map_or(10, |&m| m.saturating_add(10));
        let probes = starts
            .iter()
            .flat_map(|&s| [s.saturating_sub(1), s, s.saturating_add(1)])
            .chain((0..200).map(|i| top / 200 * i))
            .chain(extra.iter().copied());
        for x in probes {
            assert_eq!(
                t.last_le(x),
                reference(starts, x),
                "n={} x={x}",
                starts.len()
            );
        }
    }

    #[test]
    fn matches_partition_point() {
        let special = [0, u64::from(u32::MAX) - 1, u64::from(u32::MAX), u64::MAX];
        for n in [0u64, 1, 2, 15, 16, 17, 255, 256, 257, 4097, 10_000] {
            let starts: Vec<u64> = (0..n).map(|i| i * 7 + 3).collect();
            check(&starts, &special);
        }
        check(&[0], &special);
        check(&[u64::from(u32::MAX) - 1], &special);
    }

    #[test]
    fn clustered_and_wide_keys() {
        // Most keys in one bucket, a few far away: buckets overflow the window.
        let mut starts: Vec<u64> = (0..5000u64).collect();
        starts.extend((1..50u64).map(|i| i << 30));
        check(&starts, &[]);
        let wide: Vec<u64> = (0..1000u64).map(|i| (1 << 40) + i * 100).collect();
        assert!(matches!(Search::build(&wide), Search::Wide(_)));
        check(&wide, &[0, 1 << 40, u64::MAX]);
        let mut mixed: Vec<u64> = (0..100u64).map(|i| i * 3).collect();
        mixed.push(1 << 45);
        check(&mixed, &[(1 << 45) - 1, u64::MAX]);
    }
}
