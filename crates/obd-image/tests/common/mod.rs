//! Helpers shared by the obd-image integration tests: real layers built with obd-lsmt
//! (committed, sealed, ZFile, tar-wrapped) next to a byte model of the device.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use obd_core::{BlockDevice, ReadAt};
use obd_lsmt::{AppendLayer, CommitMeta, CreateOptions, SparseLayer, WritableLayer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Device size used by most tests.
pub const VSIZE: u64 = 4 << 20;

/// Path of a file under the repository's `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

/// The value for `key` in a fixture set's expected.txt.
pub fn expected(set: &str, key: &str) -> String {
    let text = std::fs::read_to_string(fixture(&format!("{set}/expected.txt"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{key} not in {set}/expected.txt"))
        .trim()
        .to_string()
}

/// Lower-case hex sha256.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `sha256:<hex>` of a file's bytes.
pub fn digest_of(path: &Path) -> String {
    format!("sha256:{}", sha256(&std::fs::read(path).unwrap()))
}

/// Apply `writes` random writes (and one discard) to `dev` and to `model`.
pub fn scribble(dev: &dyn BlockDevice, model: &mut [u8], seed: u64, writes: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sectors = model.len() as u64 / 512;
    for i in 0..=writes {
        let len = rng.random_range(1..=128u64).min(sectors);
        let start = rng.random_range(0..=sectors - len);
        let (off, n) = ((start * 512) as usize, (len * 512) as usize);
        if i == writes {
            dev.discard(off as u64, n as u64).unwrap();
            model[off..off + n].fill(0);
        } else {
            let mut buf = vec![0u8; n];
            rng.fill(&mut buf[..]);
            dev.write_at(&buf, off as u64).unwrap();
            model[off..off + n].copy_from_slice(&buf);
        }
    }
    dev.flush().unwrap();
}

/// Create a writable layer `<name>.data` / `<name>.index` in `dir` (sparse or append).
pub fn create_upper(dir: &Path, name: &str, vsize: u64, sparse: bool) -> (PathBuf, PathBuf) {
    let (d, i) = (
        dir.join(format!("{name}.data")),
        dir.join(format!("{name}.index")),
    );
    if sparse {
        SparseLayer::create(&d, &i, vsize, CreateOptions::default()).unwrap();
    } else {
        AppendLayer::create(&d, &i, vsize, CreateOptions::default()).unwrap();
    }
    (d, i)
}

/// Build a writable layer with random content (applied to `model`) and commit it to
/// `<dir>/<name>.lsmt`; returns the committed file.
pub fn committed_layer(dir: &Path, name: &str, model: &mut [u8], seed: u64) -> PathBuf {
    let (d, i) = create_upper(dir, &format!("{name}.rw"), model.len() as u64, false);
    let layer = AppendLayer::open(&d, &i).unwrap();
    scribble(&layer, model, seed, 6);
    let out = dir.join(format!("{name}.lsmt"));
    let f = File::create(&out).unwrap();
    WritableLayer::commit_to_file(&layer, &f, &CommitMeta::default()).unwrap();
    f.sync_all().unwrap();
    out
}

/// ZFile-compress `src` into `dst` (lz4, 4 KiB, CRC).
pub fn zfile(src: &Path, dst: &Path) -> PathBuf {
    let opts = obd_zfile::ZFileOptions {
        threads: 1,
        ..Default::default()
    };
    obd_zfile::compress_file(src, dst, &opts, true, None).unwrap();
    dst.to_path_buf()
}

/// Wrap `src` in overlaybd's one-entry tar into `dst`.
pub fn tar(src: &Path, dst: &Path) -> PathBuf {
    obd_tar::wrap_file(src, dst).unwrap();
    dst.to_path_buf()
}

/// A sealed layer (`overlaybd-commit --seal`): random content, sealed in place.
pub fn sealed_layer(dir: &Path, name: &str, model: &mut [u8], seed: u64) -> PathBuf {
    let (d, i) = create_upper(dir, name, model.len() as u64, false);
    {
        let layer = AppendLayer::open(&d, &i).unwrap();
        scribble(&layer, model, seed, 6);
        layer.close().unwrap();
    }
    obd_lsmt::seal_in_place(&d, &i).unwrap();
    d
}

/// Write `json` as `<dir>/<name>` and return its path.
pub fn write_config(dir: &Path, name: &str, json: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    p
}

/// The whole content of a source.
pub fn read_all(src: &dyn ReadAt) -> Vec<u8> {
    src.read_vec(0, src.size() as usize).unwrap()
}
