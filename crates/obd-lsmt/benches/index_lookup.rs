//! Merged-index lookups at 1k / 10k / 100k segments: point lookups (the segment holding a
//! sector) and 4 KiB range lookups, against a plain binary search as the baseline.
//! Throughput is reported in lookups per second.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use obd_lsmt::SegmentIndex;
use obd_lsmt::layout::Segment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const QUERIES: usize = 8192;

fn index(n: usize, rng: &mut StdRng) -> SegmentIndex {
    let mut segs = Vec::with_capacity(n);
    let mut pos = 0u64;
    for i in 0..n {
        pos += rng.random_range(0..64);
        let length = rng.random_range(1..=256);
        segs.push(Segment {
            offset: pos,
            length,
            moffset: 8 + pos,
            zeroed: i % 7 == 0,
            tag: 0,
        });
        pos += u64::from(length);
    }
    SegmentIndex::new(segs).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_lookup");
    for n in [1_000usize, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(n as u64);
        let idx = index(n, &mut rng);
        let end = idx.segments().last().map_or(1, |s| s.end());
        let queries: Vec<u64> = (0..QUERIES).map(|_| rng.random_range(0..end)).collect();
        g.throughput(Throughput::Elements(QUERIES as u64));

        g.bench_with_input(BenchmarkId::new("point", n), &queries, |b, q| {
            b.iter(|| {
                let mut hits = 0u64;
                for &x in q {
                    if let Some(s) = idx.find(black_box(x)) {
                        hits += s.moffset;
                    }
                }
                hits
            })
        });

        let segs = idx.segments();
        g.bench_with_input(
            BenchmarkId::new("point_binary_search_baseline", n),
            &queries,
            |b, q| {
                b.iter(|| {
                    let mut hits = 0u64;
                    for &x in q {
                        let i = segs.partition_point(|s| s.end() <= black_box(x));
                        if let Some(s) = segs.get(i).filter(|s| s.offset <= x) {
                            hits += s.moffset;
                        }
                    }
                    hits
                })
            },
        );

        g.bench_with_input(BenchmarkId::new("range_4k", n), &queries, |b, q| {
            b.iter(|| {
                let mut total = 0u64;
                for &x in q {
                    for s in idx.lookup(black_box(x), 8) {
                        total += u64::from(s.length);
                    }
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
