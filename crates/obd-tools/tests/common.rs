//! Helpers for running the built binaries in tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// Path of a fixture file under the repository's tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// A command for one of this crate's binaries.
pub fn bin(name: &str) -> Command {
    let path = match name {
        "obd" => env!("CARGO_BIN_EXE_obd"),
        "overlaybd-create" => env!("CARGO_BIN_EXE_overlaybd-create"),
        "overlaybd-commit" => env!("CARGO_BIN_EXE_overlaybd-commit"),
        "overlaybd-zfile" => env!("CARGO_BIN_EXE_overlaybd-zfile"),
        "overlaybd-merge" => env!("CARGO_BIN_EXE_overlaybd-merge"),
        other => panic!("unknown binary {other}"),
    };
    let mut c = Command::new(path);
    c.stdin(Stdio::null());
    c
}

/// Run and require success; returns stdout.
pub fn ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// Run and require failure; returns the whole output.
pub fn fails(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    out
}

/// Run with `input` on stdin and require success.
pub fn ok_with_stdin(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Lower-case hex sha256.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The value for `key` in a fixture expected.txt of `key value` lines.
pub fn expected(set: &str, key: &str) -> String {
    let text = std::fs::read_to_string(fixture(&format!("{set}/expected.txt"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{key} not in {set}/expected.txt"))
        .trim()
        .to_string()
}

/// Deterministic mixed data: text and pseudo-random bytes in alternating 64 KiB chunks.
pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let words = [
        &b"overlaybd "[..],
        b"layer ",
        b"zfile ",
        b"block\n",
        b"segment ",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let chunk = (len - out.len()).min(65536);
        if (out.len() / 65536) % 2 == 0 {
            let start = out.len();
            while out.len() < start + chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(words[(x % 5) as usize]);
            }
            out.truncate(start + chunk);
        } else {
            for _ in 0..chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push((x >> 24) as u8);
            }
        }
    }
    out
}
