use obd_core::{MemDevice, ReadAt};
use obd_zfile::*;
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
#[test]
#[ignore]
fn probe() {
    let size = 16 << 20;
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let words = [
        "overlaybd ",
        "zfile ",
        "block ",
        "index ",
        "lz4 ",
        "zstd\n",
        "layer ",
        "tar ",
    ];
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (data.len() / 65536) % 2 == 0 {
            data.extend_from_slice(words[(x % 8) as usize].as_bytes());
        } else {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(size);
    let gbs = |ns: u64, reps: usize| (size * reps) as f64 / ns as f64;
    for algo in [Algorithm::Lz4, Algorithm::Zstd] {
        let mut out = vec![0u8; 8192];
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        let t = cpu_ns();
        let mut tot = 0;
        for b in data.chunks(4096) {
            tot += match algo {
                Algorithm::Lz4 => lz4_flex::block::compress_into(b, &mut out).unwrap(),
                Algorithm::Zstd => z.compress_to_buffer(b, &mut out[..]).unwrap(),
            };
        }
        println!("raw compress {:.2} ({tot})", gbs(cpu_ns() - t, 1));
        let opts = ZFileOptions {
            algorithm: algo,
            block_size: 4096,
            crc: true,
            threads: 1,
        };
        let t = cpu_ns();
        let zf = compress_to_vec(&data, &opts, false).unwrap();
        let comp = gbs(cpu_ns() - t, 1);
        let r = ZFileReader::open(MemDevice::from_vec(zf)).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for off in (0..size).step_by(buf.len()) {
            r.read_exact_at(&mut buf, off as u64).unwrap();
        }
        let t = cpu_ns();
        for _ in 0..5 {
            for off in (0..size).step_by(buf.len()) {
                r.read_exact_at(&mut buf, off as u64).unwrap();
            }
        }
        let read = gbs(cpu_ns() - t, 5);
        let mut blk = vec![0u8; 4096];
        let t = cpu_ns();
        for i in 0..(size / 4096) {
            r.read_exact_at(&mut blk, ((i * 7919) % (size / 4096) * 4096) as u64)
                .unwrap();
        }
        let rnd = gbs(cpu_ns() - t, 1);
        println!("{algo:?} CPU-time GB/s: compress {comp:.2} read-1m {read:.2} random-4k {rnd:.2}");
    }
}
