//! Test helpers: a port of the fixtures' input generator (`tests/fixtures/common/gen.py`),
//! which depends on CPython's `random.Random` (MT19937 seeded by `init_by_array`).
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a file under the workspace's `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/"
    ))
    .join(rel)
}

/// CPython's `random.Random` for integer seeds, as far as gen.py uses it.
pub struct PyRandom {
    mt: [u32; 624],
    idx: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative seed.
    pub fn new(seed: u64) -> Self {
        let mut key: Vec<u32> = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom {
            mt: [0; 624],
            idx: 624,
        };
        r.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                r.mt[0] = r.mt[623];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let prev = self.mt[i - 1] ^ (self.mt[i - 1] >> 30);
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        self.idx = 624;
    }

    fn genrand(&mut self) -> u32 {
        if self.idx >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow(n)` via `getrandbits(n.bit_length())` with rejection (n < 2^32).
    fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.genrand() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }

    /// `randint(a, b)`.
    pub fn randint(&mut self, a: u32, b: u32) -> u32 {
        a + self.randbelow(b - a + 1)
    }

    /// `randbytes(n)` = `getrandbits(8n).to_bytes(n, "little")`.
    pub fn randbytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 4);
        let mut bits = n * 8;
        while bits > 0 {
            let mut r = self.genrand();
            if bits < 32 {
                r >>= 32 - bits;
            }
            out.extend_from_slice(&r.to_le_bytes());
            bits = bits.saturating_sub(32);
        }
        out.truncate(n);
        out
    }
}

const VOCAB: &str = "overlaybd lsmt zfile layer block index trailer header segment mapping offset \
    length sector compress decompress lz4 zstd checksum crc32c virtual device image registry \
    container snapshot commit merge apply tar whiteout opaque ext4 inode extent journal \
    alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike \
    november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu";

fn text_line(rng: &mut PyRandom, vocab: &[&str], out: &mut Vec<u8>) {
    let n = rng.randint(4, 14);
    for w in 0..n {
        if w > 0 {
            out.push(b' ');
        }
        let i = rng.randbelow(vocab.len() as u32) as usize;
        out.extend_from_slice(vocab[i].as_bytes());
    }
    out.push(b'\n');
}

/// `gen.py mixed SIZE SEED CHUNK`: alternating CHUNK bytes of text and random, text first.
pub fn gen_mixed(size: usize, seed: u64, chunk: usize) -> Vec<u8> {
    let vocab: Vec<&str> = VOCAB.split_whitespace().collect();
    let mut trng = PyRandom::new(seed);
    let mut rrng = PyRandom::new(seed + 1);
    let mut out = Vec::with_capacity(size);
    let mut pend: Vec<u8> = Vec::new();
    let mut i = 0;
    while out.len() < size {
        let n = chunk.min(size - out.len());
        if i % 2 == 0 {
            while pend.len() < n {
                text_line(&mut trng, &vocab, &mut pend);
            }
            out.extend_from_slice(&pend[..n]);
            pend.drain(..n);
        } else {
            out.extend_from_slice(&rrng.randbytes(n));
        }
        i += 1;
    }
    out
}

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The two c_zfile inputs: (name, data), checked against the recorded sha256.
pub fn c_zfile_input(name: &str) -> Vec<u8> {
    let (data, want) = match name {
        "mixed2m" => (
            gen_mixed(2_097_152, 1, 65536),
            "615080e405c7bbec8e29856db66c703d4bf1c8412cf8d067b4da702bca532521",
        ),
        "odd1000003" => (
            gen_mixed(1_000_003, 7, 50000),
            "a0ed1fe425c5bfd362318b6cfaa2d29b985ded43a75f4cd4727b31a603640aa6",
        ),
        _ => panic!("unknown input {name}"),
    };
    assert_eq!(
        sha256_hex(&data),
        want,
        "regenerated {name} differs from the recorded sha256"
    );
    data
}
