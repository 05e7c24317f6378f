//! Stack read throughput against depth (1, 16, 64 layers; random 4 KiB and sequential 1 MiB
//! reads), and the speed of committing a large uncompressed layer.
//!
//! Every stack has the same merged index shape (4096 runs of 31 sectors with 1-sector holes
//! over 64 MiB), so differences between depths measure per-layer overhead only: the bottom
//! layer maps every run, and layer `d` of a `D`-deep stack overrides the `d`-th of `D` equal
//! blocks of runs (plus every `D`-th run elsewhere, so layers also interleave finely).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use obd_core::{FileDevice, MemDevice, ReadAt};
use obd_lsmt::layout::Segment;
use obd_lsmt::{CommitMeta, LayerStack, LsmtLayer, compact, compact_to_file};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VSIZE: u64 = 64 << 20;
const RUN: u64 = 32;

fn layer_file(runs: impl Iterator<Item = u64>, rng: &mut StdRng) -> Vec<u8> {
    let mut data = vec![0u8; VSIZE as usize];
    rng.fill(&mut data[..]);
    let segs: Vec<Segment> = runs
        .map(|c| Segment {
            offset: c * RUN,
            length: (RUN - 1) as u32,
            moffset: c * RUN,
            zeroed: false,
            tag: 0,
        })
        .collect();
    let src = MemDevice::from_vec(data);
    let mut out = Vec::new();
    let meta = CommitMeta {
        vsize: VSIZE,
        ..Default::default()
    };
    compact(&segs, &[&src], &mut out, &meta).unwrap();
    out
}

fn stack(depth: u64) -> LayerStack {
    let mut rng = StdRng::seed_from_u64(depth);
    let runs = VSIZE / 512 / RUN;
    let mut files: Vec<Arc<dyn ReadAt>> = Vec::new();
    files.push(Arc::new(MemDevice::from_vec(layer_file(0..runs, &mut rng))));
    for d in 1..depth {
        let block = runs / depth;
        let f = layer_file(
            (0..runs).filter(|c| c / block == d || (c % depth == d && c % 7 == 0)),
            &mut rng,
        );
        files.push(Arc::new(MemDevice::from_vec(f)));
    }
    let s = LayerStack::open(files).unwrap();
    assert_eq!(s.index().len() as u64, runs);
    s
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack_read");
    for depth in [1u64, 16, 64] {
        let s = stack(depth);
        let mut rng = StdRng::seed_from_u64(1);
        let offsets: Vec<u64> = (0..4096)
            .map(|_| rng.random_range(0..VSIZE / 4096) * 4096)
            .collect();
        let mut buf = vec![0u8; 4096];
        g.throughput(Throughput::Bytes(4096 * offsets.len() as u64));
        g.bench_function(BenchmarkId::new("random_4k", depth), |b| {
            b.iter(|| {
                for &o in &offsets {
                    s.read_exact_at(&mut buf, black_box(o)).unwrap();
                }
            })
        });
        // Single sectors: little memory traffic, so this shows the software cost per read.
        let mut small = vec![0u8; 512];
        g.throughput(Throughput::Elements(offsets.len() as u64));
        g.bench_function(BenchmarkId::new("random_512_reads", depth), |b| {
            b.iter(|| {
                for &o in &offsets {
                    s.read_exact_at(&mut small, black_box(o % (1 << 20)))
                        .unwrap();
                }
            })
        });
        let mut big = vec![0u8; 1 << 20];
        g.throughput(Throughput::Bytes(VSIZE));
        g.bench_function(BenchmarkId::new("sequential_1m", depth), |b| {
            b.iter(|| {
                for o in (0..VSIZE).step_by(1 << 20) {
                    s.read_exact_at(&mut big, black_box(o)).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// Re-commit an uncompressed layer file of `OBD_BENCH_COMMIT_MIB` (default 512) MiB with
/// `compact_to_file` (copy_file_range) and with the streaming `compact`.
fn commit(c: &mut Criterion) {
    let mib: u64 = std::env::var("OBD_BENCH_COMMIT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let raw_path = dir.path().join("raw");
    let pattern: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&raw_path).unwrap();
        for _ in 0..mib {
            f.write_all(&pattern).unwrap();
        }
    }
    // The layer: written data in 1 MiB writes, as a writable layer would log them.
    let raw = FileDevice::open(&raw_path).unwrap();
    let segs: Vec<Segment> = (0..size / (1 << 20))
        .map(|i| Segment {
            offset: i * 2048,
            length: 2048,
            moffset: i * 2048,
            zeroed: false,
            tag: 0,
        })
        .collect();
    let layer_path = dir.path().join("layer.lsmt");
    let meta = CommitMeta {
        vsize: size,
        ..Default::default()
    };
    let f = std::fs::File::create(&layer_path).unwrap();
    compact_to_file(&segs, &[&raw], &f, &meta).unwrap();
    drop(f);
    let layer = LsmtLayer::open(FileDevice::open(&layer_path).unwrap()).unwrap();

    let mut g = c.benchmark_group("commit");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    let out_path = dir.path().join("out.lsmt");
    g.bench_function(BenchmarkId::new("compact_to_file", mib), |b| {
        b.iter(|| {
            let out = std::fs::File::create(&out_path).unwrap();
            compact_to_file(layer.segments(), &[layer.source()], &out, &meta).unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("compact_stream", mib), |b| {
        b.iter(|| {
            let mut out = std::fs::File::create(&out_path).unwrap();
            compact(layer.segments(), &[layer.source()], &mut out, &meta).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, reads, commit);
criterion_main!(benches);
