//! Compression and decompression throughput of ZFile on mixed text/random data.
//!
//! `cargo bench -p obd-zfile --bench zfile`

#![allow(missing_docs)]

use std::io::Write;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use obd_core::{MemDevice, ReadAt};
use obd_zfile::{
    Algorithm, ZFileOptions, ZFileReader, ZFileWriter, compress_to_vec, decompress_to,
};

const SIZE: usize = 16 << 20;

/// Alternating 64 KiB of word text and 64 KiB of xorshift noise.
fn mixed(size: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "overlaybd ",
        "zfile ",
        "block ",
        "index ",
        "lz4 ",
        "zstd\n",
        "layer ",
        "tar ",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        let end = (v.len() + 65536).min(size);
        if (v.len() / 65536) % 2 == 0 {
            while v.len() < end {
                let w = WORDS[(next() % 8) as usize].as_bytes();
                v.extend_from_slice(&w[..w.len().min(end - v.len())]);
            }
        } else {
            while v.len() < end {
                let r = next().to_le_bytes();
                v.extend_from_slice(&r[..8.min(end - v.len())]);
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let data = mixed(SIZE);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("zfile");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(SIZE as u64));
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        for bs in [4096u32, 65536] {
            let name = format!("{}-{}k", algo.name(), bs / 1024);
            for t in [1, threads] {
                let opts = ZFileOptions {
                    algorithm: algo,
                    block_size: bs,
                    crc: true,
                    threads: t,
                };
                g.bench_function(format!("compress/{name}/{t}t"), |b| {
                    b.iter(|| {
                        let mut w =
                            ZFileWriter::new(Vec::with_capacity(SIZE), opts.clone()).unwrap();
                        w.write_all(&data).unwrap();
                        w.finish().unwrap().compressed_size
                    })
                });
            }
            let opts = ZFileOptions {
                algorithm: algo,
                block_size: bs,
                crc: true,
                threads,
            };
            let z = ZFileReader::open(MemDevice::from_vec(
                compress_to_vec(&data, &opts, false).unwrap(),
            ))
            .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            g.bench_function(format!("read-1m/{name}/1t"), |b| {
                b.iter(|| {
                    for off in (0..SIZE).step_by(buf.len()) {
                        z.read_exact_at(&mut buf, off as u64).unwrap();
                    }
                })
            });
            g.bench_function(format!("decompress_to/{name}/{threads}t"), |b| {
                b.iter(|| decompress_to(&z, std::io::sink()).unwrap())
            });
            let mut block = vec![0u8; bs as usize];
            g.throughput(Throughput::Bytes(u64::from(bs)));
            g.bench_function(format!("read-block-random/{name}/1t"), |b| {
                let mut i = 0u64;
                b.iter(|| {
                    i = (i + 7919) % (SIZE as u64 / u64::from(bs));
                    z.read_exact_at(&mut block, i * u64::from(bs)).unwrap();
                })
            });
            g.throughput(Throughput::Bytes(SIZE as u64));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
