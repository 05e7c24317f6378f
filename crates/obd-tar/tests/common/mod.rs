//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use obd_tar::EntryMeta;
use obd_tar::layout;

/// A reproducible pseudo-random payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A complete wrapped file as upstream lays it out.
pub fn wrapped(data: &[u8], meta: &EntryMeta) -> Vec<u8> {
    let size = data.len() as u64;
    let mut v = layout::wrap_header(&meta.name, size, meta.mode, meta.mtime).unwrap();
    v.extend_from_slice(data);
    v.extend_from_slice(&layout::trailer(size));
    v
}

/// Run `tar` with `args` in `dir`; return stdout. Fails the test when tar fails or prints
/// anything on stderr (a warning means it found something off in the archive).
pub fn tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tar");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "tar {args:?} failed or warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
