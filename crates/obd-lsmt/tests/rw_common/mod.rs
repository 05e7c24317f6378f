//! Helpers shared by the `rw_*` integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use obd_core::{BlockDevice, ReadAt};
use sha2::{Digest, Sha256};

/// Path of a file under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

/// Bytes of a fixture file.
pub fn bytes(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap()
}

/// The value after `key ` on a line of a fixture's expected.txt.
pub fn expected(set: &str, key: &str) -> String {
    let text = std::fs::read_to_string(fixture(&format!("{set}/expected.txt"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("{key} not in {set}/expected.txt"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Hex sha256 of a whole device.
pub fn sha256_dev(dev: &dyn ReadAt) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < dev.size() {
        let n = (dev.size() - off).min(buf.len() as u64) as usize;
        dev.read_exact_at(&mut buf[..n], off).unwrap();
        h.update(&buf[..n]);
        off += n as u64;
    }
    hex::encode(h.finalize())
}

/// Hex sha256 of bytes.
pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// One line of an ops file: a write (`w OFF LEN PAYLOAD_OFF`) or a discard (`d OFF LEN`).
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Write {
        off: u64,
        len: u64,
        payload_off: u64,
    },
    Discard {
        off: u64,
        len: u64,
    },
}

/// Parse an ops file.
pub fn ops(rel: &str) -> Vec<Op> {
    std::fs::read_to_string(fixture(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            match f[0] {
                "w" => Op::Write {
                    off: n(1),
                    len: n(2),
                    payload_off: n(3),
                },
                "d" => Op::Discard {
                    off: n(1),
                    len: n(2),
                },
                x => panic!("bad op {x}"),
            }
        })
        .collect()
}

/// Apply `ops` to `dev`. Write payloads come from `payload` at their payload offset.
pub fn apply(dev: &dyn BlockDevice, ops: &[Op], payload: &[u8]) {
    for op in ops {
        match *op {
            Op::Write {
                off,
                len,
                payload_off,
            } => {
                let p = &payload[payload_off as usize..(payload_off + len) as usize];
                dev.write_at(p, off).unwrap();
            }
            Op::Discard { off, len } => dev.discard(off, len).unwrap(),
        }
    }
}

/// Copy a fixture file into `dir`, writable, and return the copy's path.
pub fn copy_fixture(rel: &str, dir: &Path) -> PathBuf {
    let dst = dir.join(Path::new(rel).file_name().unwrap());
    std::fs::write(&dst, bytes(rel)).unwrap();
    dst
}

/// The UUID used by the fixtures.
pub const UUID1: &str = "11111111-1111-4111-8111-111111111111";
