//! Damaged layer files: every defect is an error (never a panic, never wrong bytes) whose
//! message names the file and a byte offset.

mod ro_common;

use std::path::Path;
use std::sync::Arc;

use obd_core::{ErrorKind, FileDevice, MemDevice, ReadAt};
use obd_lsmt::layout::Segment;
use obd_lsmt::{LayerStack, LsmtLayer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ro_common::fixture;

const INDEX_OFFSET: usize = 337_920; // of b_commit/layers/l1.lsmt

fn l1() -> Vec<u8> {
    std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap()
}

fn trailer(b: &[u8]) -> usize {
    b.len() - 4096
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn entry(b: &[u8], i: usize) -> Segment {
    Segment::decode(b[INDEX_OFFSET + 16 * i..][..16].try_into().unwrap())
}

fn set_entry(b: &mut [u8], i: usize, s: Segment) {
    b[INDEX_OFFSET + 16 * i..][..16].copy_from_slice(&s.encode());
}

/// Write `bytes` to a file, open it as a layer, and return the error text; checks that it
/// names the file and an offset.
fn open_err(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let e = LsmtLayer::open(FileDevice::open(&path).unwrap())
        .map(|_| ())
        .expect_err(&format!("{name}: damaged layer opened"));
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{name}: {msg}");
    assert_eq!(e.path(), Some(path.as_path()), "{name}: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "{name}: no path in: {msg}"
    );
    assert!(msg.contains("at offset"), "{name}: no offset in: {msg}");
    msg
}

#[test]
fn truncated_files() {
    let b = l1();
    let m = open_err("cut_tail", &b[..b.len() - 100]);
    assert!(m.contains("trailer"), "{m}");
    let m = open_err("cut_small", &b[..5000]);
    assert!(m.contains("too small"), "{m}");
    open_err("empty", &[]);
    // The trailer kept but data cut away: the index points past where it now starts.
    let mut short = b[..INDEX_OFFSET - 8192].to_vec();
    short.extend_from_slice(&b[INDEX_OFFSET..]);
    let t = trailer(&short);
    set_u64(&mut short, t + 32, (INDEX_OFFSET - 8192) as u64);
    let m = open_err("short_data", &short);
    assert!(m.contains("outside the data area"), "{m}");
}

#[test]
fn bad_magic_and_flags() {
    let b = l1();
    let mut x = b.clone();
    x[0] ^= 0xFF;
    assert!(open_err("hdr_magic", &x).contains("at offset 0:"));
    let mut x = b.clone();
    x[20] ^= 1; // magic1
    open_err("hdr_magic1", &x);
    let mut x = b.clone();
    let t = trailer(&x);
    x[t + 3] ^= 0xFF;
    assert!(open_err("trl_magic", &x).contains(&format!("at offset {t}:")));
    let mut x = b.clone();
    set_u32(&mut x, 28, 0x6); // header without the header bit
    open_err("hdr_flags", &x);
    for (name, flags) in [
        ("trl_unsealed", 0x2u32),
        ("trl_index_file", 0x4),
        ("trl_is_header", 0x7),
    ] {
        let mut x = b.clone();
        let t = trailer(&x);
        set_u32(&mut x, t + 28, flags);
        let m = open_err(name, &x);
        assert!(m.contains(&format!("at offset {}:", t + 28)), "{m}");
    }
    let mut x = b.clone();
    let t = trailer(&x);
    set_u32(&mut x, t + 24, 391); // struct size field
    open_err("trl_size_field", &x);
}

#[test]
fn index_bounds() {
    let b = l1();
    let t = trailer(&b);
    for (name, size) in [
        ("huge", 2_000_000u64),
        ("max_but_too_big", 1_000_000),
        ("u64max", u64::MAX),
    ] {
        let mut x = b.clone();
        set_u64(&mut x, t + 40, size);
        let m = open_err(name, &x);
        assert!(
            m.contains(&format!("at offset {}:", t + 40)) || m.contains("does not fit"),
            "{m}"
        );
    }
    for (name, off) in [
        ("beyond_file", 1u64 << 40),
        ("beyond_trailer", t as u64 + 16),
        ("max", u64::MAX),
    ] {
        let mut x = b.clone();
        set_u64(&mut x, t + 32, off);
        assert!(open_err(name, &x).contains("does not fit"));
    }
    let mut x = b.clone();
    set_u64(&mut x, t + 32, 512);
    assert!(open_err("in_header", &x).contains("inside the header"));
}

#[test]
fn bad_entries() {
    let b = l1();
    let (e0, e1) = (entry(&b, 0), entry(&b, 1));

    let mut x = b.clone();
    set_entry(&mut x, 0, e1);
    set_entry(&mut x, 1, e0);
    let m = open_err("unsorted", &x);
    assert!(
        m.contains(&format!("at offset {}:", INDEX_OFFSET + 16)),
        "{m}"
    );
    assert!(m.contains("sorted"), "{m}");

    let mut x = b.clone();
    set_entry(
        &mut x,
        1,
        Segment {
            offset: e0.offset + 1,
            ..e1
        },
    );
    assert!(open_err("overlap", &x).contains("overlaps"));

    let mut x = b.clone();
    set_entry(
        &mut x,
        2,
        Segment {
            moffset: 2,
            ..entry(&b, 2)
        },
    );
    let m = open_err("into_header", &x);
    assert!(
        m.contains(&format!("at offset {}:", INDEX_OFFSET + 32)),
        "{m}"
    );

    let mut x = b.clone();
    let last = entry(&b, 8);
    set_entry(
        &mut x,
        8,
        Segment {
            moffset: (INDEX_OFFSET / 512) as u64 - 4,
            ..last
        },
    );
    assert!(open_err("into_index", &x).contains("outside the data area"));

    // A zeroed entry may sit exactly at the index (upstream allows moffset == end) but
    // not beyond it.
    let mut x = b.clone();
    let z = entry(&b, 4);
    assert!(z.zeroed);
    set_entry(
        &mut x,
        4,
        Segment {
            moffset: (INDEX_OFFSET / 512) as u64,
            ..z
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zeroed_at_end");
    std::fs::write(&p, &x).unwrap();
    LsmtLayer::open(FileDevice::open(&p).unwrap()).unwrap();
    set_entry(
        &mut x,
        4,
        Segment {
            moffset: (INDEX_OFFSET / 512) as u64 + 1,
            ..z
        },
    );
    open_err("zeroed_beyond", &x);
}

#[test]
fn file_truncated_after_open_fails_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinks.lsmt");
    std::fs::write(&path, l1()).unwrap();
    let layer = LsmtLayer::open(FileDevice::open(&path).unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8192)
        .unwrap();
    // Sector 131064 maps to file sector 652 (byte 333824), now gone.
    let e = layer.read_vec(131_064 * 512, 4096).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{msg}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("at offset 333824"),
        "{msg}"
    );
    // Holes still read as zeros.
    assert_eq!(layer.read_vec(100 * 512, 512).unwrap(), vec![0u8; 512]);
}

#[test]
fn stacks_name_the_bad_layer() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("b_commit/layers/l1.lsmt");
    let bad = dir.path().join("bad.lsmt");
    let mut b = l1();
    b[0] = 0;
    std::fs::write(&bad, &b).unwrap();
    let open = |p: &Path| Arc::new(FileDevice::open(p).unwrap()) as Arc<dyn ReadAt>;
    for n in [2usize, 9] {
        let mut v: Vec<Arc<dyn ReadAt>> = (0..n - 1).map(|_| open(&good)).collect();
        v.insert(1, open(&bad));
        let e = LayerStack::open(v).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("layer 1") && m.contains("bad.lsmt") && m.contains("at offset 0"),
            "{m}"
        );
    }
    assert_eq!(
        LayerStack::open(Vec::new()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let many: Vec<Arc<dyn ReadAt>> = (0..256).map(|_| open(&good)).collect();
    assert_eq!(
        LayerStack::open(many).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let max: Vec<Arc<dyn ReadAt>> = (0..255).map(|_| open(&good)).collect();
    assert_eq!(LayerStack::open(max).unwrap().layers().len(), 255);
}

/// Random damage to the index and trailer: opening and reading never panic, and whatever
/// opens reads within bounds.
#[test]
fn random_damage_never_panics() {
    let b = l1();
    let mut rng = StdRng::seed_from_u64(5);
    let mut opened = 0;
    for _ in 0..2000 {
        let mut x = b.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = if rng.random_bool(0.7) {
                rng.random_range(INDEX_OFFSET..INDEX_OFFSET + 16 * 9)
            } else {
                rng.random_range(x.len() - 4096..x.len() - 4096 + 64)
            };
            x[at] = rng.random();
        }
        if let Ok(layer) = LsmtLayer::open(MemDevice::from_vec(x)) {
            opened += 1;
            let size = layer.size().min(1 << 27);
            for _ in 0..4 {
                let off = rng.random_range(0..=size);
                let len = rng.random_range(0..=(size - off).min(1 << 20));
                let _ = layer.read_vec(off, len as usize);
            }
        }
    }
    assert!(opened > 0);
}
