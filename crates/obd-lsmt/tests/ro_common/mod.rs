//! Helpers shared by the `ro_*` integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use obd_core::{FileDevice, ReadAt};
use obd_lsmt::layout::Segment;
use sha2::{Digest, Sha256};

/// Path of a file under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

/// Open a fixture file.
pub fn open(rel: &str) -> Arc<dyn ReadAt> {
    Arc::new(FileDevice::open(fixture(rel)).unwrap())
}

/// Read a fixture text file.
pub fn text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap()
}

/// The `offset length moffset zeroed tag` lines following the comment line starting with
/// `# {section}` in an expected.txt.
pub fn dump(text: &str, section: &str) -> Vec<Segment> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("# {section}")));
    assert!(lines.next().is_some(), "section {section} not found");
    let mut out = Vec::new();
    for l in lines {
        if l.starts_with('#') {
            if out.is_empty() {
                continue; // column legend
            }
            break;
        }
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() != 5 {
            if out.is_empty() {
                continue; // e.g. "vsize 67108864"
            }
            break;
        }
        out.push(Segment {
            offset: f[0],
            length: f[1] as u32,
            moffset: f[2],
            zeroed: f[3] != 0,
            tag: f[4] as u8,
        });
    }
    out
}

/// The value after `key ` on a line of an expected.txt.
pub fn value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("{key} not found"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// sha256 of `len` bytes of `src` at `offset`, read in 4 MiB pieces.
pub fn sha_range(src: &dyn ReadAt, offset: u64, len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset + done).unwrap();
        h.update(&buf[..n]);
        done += n as u64;
    }
    hex::encode(h.finalize())
}

/// sha256 of a whole device.
pub fn sha_device(src: &dyn ReadAt) -> String {
    sha_range(src, 0, src.size())
}

/// sha256 of bytes.
pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}
