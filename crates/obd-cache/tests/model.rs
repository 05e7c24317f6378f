//! Property test: random reads, invalidations, clears, gc, corruption and restarts against
//! the source bytes, with the capacity bound checked after every step.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use obd_cache::{BlobCache, CachedBlob};
use obd_core::ReadAt;
use proptest::prelude::*;

const REFILL: u32 = 8192;
const CAP: u64 = 12 * 8192;
const SIZES: [usize; 3] = [20_000, 45_000, 8192 * 7];

#[derive(Debug, Clone)]
enum Op {
    Read(usize, u64, u64),
    ReadCached(usize, u64, u64),
    Invalidate(usize, u64, u64),
    InvalidateAll(usize),
    Clear,
    Gc(u64),
    Flip(usize, u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..3usize, 0..1000u64, 0..1000u64);
    prop_oneof![
        6 => range.clone().prop_map(|(b, o, l)| Op::Read(b, o, l)),
        2 => range.clone().prop_map(|(b, o, l)| Op::ReadCached(b, o, l)),
        2 => range.prop_map(|(b, o, l)| Op::Invalidate(b, o, l)),
        1 => (0..3usize).prop_map(Op::InvalidateAll),
        1 => Just(Op::Clear),
        1 => (0..=CAP).prop_map(Op::Gc),
        2 => (0..3usize, 0..1000u64).prop_map(|(b, p)| Op::Flip(b, p)),
        1 => Just(Op::Reopen),
    ]
}

/// Scale a 0..1000 pair to a non-empty range inside a blob of `size` bytes.
fn span(size: usize, o: u64, l: u64) -> (usize, usize) {
    let off = (o as usize * size / 1000).min(size - 1);
    let len = 1 + (l as usize * (size - off) / 1000).min(size - off - 1);
    (off, len)
}

struct World {
    dir: tempfile::TempDir,
    datas: Vec<Vec<u8>>,
    cache: Option<Arc<BlobCache>>,
    blobs: Vec<Arc<CachedBlob>>,
}

impl World {
    fn open(&mut self) {
        self.blobs.clear();
        self.cache = None;
        let cache = open(self.dir.path(), CAP, REFILL);
        self.blobs = self
            .datas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                cache
                    .blob(&fake_digest(200 + i as u32), TestSource::new(d.clone()))
                    .unwrap()
            })
            .collect();
        self.cache = Some(cache);
    }

    fn check_bounds(&self) {
        let cache = self.cache.as_ref().unwrap();
        let used = cache.usage().used;
        assert!(used <= CAP + u64::from(REFILL), "used {used}");
        let sum: u64 = self.blobs.iter().map(|b| b.cached_bytes()).sum();
        assert_eq!(used, sum, "accounting");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn cache_matches_the_source(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World {
            dir: tempfile::tempdir().unwrap(),
            datas: SIZES.iter().enumerate().map(|(i, &n)| random_bytes(n, 300 + i as u64)).collect(),
            cache: None,
            blobs: Vec::new(),
        };
        w.open();
        for op in ops {
            match op {
                Op::Read(b, o, l) => {
                    let (off, len) = span(SIZES[b], o, l);
                    let got = w.blobs[b].read_vec(off as u64, len).unwrap();
                    prop_assert!(got == w.datas[b][off..off + len]);
                    // Units just read are the most recent: when they fit, they are cached.
                    let u0 = off / REFILL as usize;
                    let u1 = (off + len - 1) / REFILL as usize;
                    if ((u1 - u0 + 1) * REFILL as usize) as u64 <= CAP {
                        let mut buf = vec![0u8; len];
                        prop_assert!(w.blobs[b].read_cached(&mut buf, off as u64).unwrap());
                        prop_assert!(buf == w.datas[b][off..off + len]);
                    }
                }
                Op::ReadCached(b, o, l) => {
                    let (off, len) = span(SIZES[b], o, l);
                    let mut buf = vec![0u8; len];
                    if w.blobs[b].read_cached(&mut buf, off as u64).unwrap() {
                        prop_assert!(buf == w.datas[b][off..off + len]);
                    }
                }
                Op::Invalidate(b, o, l) => {
                    let (off, len) = span(SIZES[b], o, l);
                    w.blobs[b].invalidate(off as u64, len as u64);
                    let mut buf = vec![0u8; len];
                    prop_assert!(!w.blobs[b].read_cached(&mut buf, off as u64).unwrap());
                }
                Op::InvalidateAll(b) => {
                    w.blobs[b].invalidate_all();
                    prop_assert_eq!(w.blobs[b].cached_bytes(), 0);
                }
                Op::Clear => {
                    w.cache.as_ref().unwrap().clear().unwrap();
                    prop_assert_eq!(w.cache.as_ref().unwrap().usage().used, 0);
                }
                Op::Gc(target) => {
                    w.cache.as_ref().unwrap().gc(Some(target)).unwrap();
                    prop_assert!(w.cache.as_ref().unwrap().usage().used <= target);
                }
                Op::Flip(b, p) => {
                    let path = data_path(w.dir.path(), &fake_digest(200 + b as u32));
                    if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) {
                        let len = f.metadata().unwrap().len();
                        if len > 0 {
                            let at = p * len / 1000;
                            let mut x = [0u8; 1];
                            f.read_exact_at(&mut x, at).unwrap();
                            f.write_all_at(&[!x[0]], at).unwrap();
                        }
                    }
                }
                Op::Reopen => w.open(),
            }
            w.check_bounds();
        }
        // Finally everything reads right, twice (second time partly from the cache).
        for _ in 0..2 {
            for (b, d) in w.blobs.iter().zip(&w.datas) {
                prop_assert!(b.read_vec(0, d.len()).unwrap() == *d);
            }
            w.check_bounds();
        }
    }
}
