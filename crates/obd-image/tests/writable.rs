//! Devices with a writable upper (append and sparse): conformance, durability across
//! reopen, exclusivity, and refusal of files that are not writable layers.

mod common;

use common::*;
use obd_core::testing::check_block_device;
use obd_core::{BlockDevice, ErrorKind, ReadAt};
use obd_image::{GlobalConfig, ImageService};
use serde_json::json;

fn service() -> ImageService {
    ImageService::new(GlobalConfig::default())
}

fn upper_over_lowers(sparse: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let l1 = zfile(
        &committed_layer(d, "l1", &mut model, 2),
        &d.join("l1.zfile"),
    );
    let (ud, ui) = create_upper(d, "upper", VSIZE, sparse);
    let cfg = write_config(
        d,
        "config.v1.json",
        &json!({"lowers": [{"file": l0}, {"file": l1}],
                "upper": {"data": "upper.data", "index": "upper.index", "vsize": 4}}),
    );
    let svc = service();
    let dev = svc.open(&cfg).unwrap();
    let info = dev.info().clone();
    assert!(!info.read_only && !dev.is_read_only());
    assert_eq!((info.size, info.lowers), (VSIZE, 2));
    assert_eq!(
        info.upper,
        Some((ud.clone(), ui.clone())),
        "paths relative to the config"
    );
    assert!(read_all(&dev) == model, "the empty upper shows the lowers");
    assert_eq!(dev.upper().unwrap().is_sparse(), sparse);
    // Writes land in the upper; lowers show through elsewhere.
    scribble(&dev, &mut model, 99, 20);
    assert!(read_all(&dev) == model);
    check_block_device(&dev, 512, 300, 5);
    let after = read_all(&dev);
    if sparse {
        // A sparse layer keeps no record of discards on disk (upstream semantics, see
        // `discard_then_reopen`); rewrite everything so the whole upper is data.
        dev.write_at(&after, 0).unwrap();
    }
    dev.flush().unwrap();
    drop(dev);
    // Reopened from the files: everything flushed is there.
    let dev = svc.open(&cfg).unwrap();
    assert!(read_all(&dev) == after, "contents changed across reopen");
    // A second device on the same upper is refused while the first is open.
    let e = svc.open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("upper"), "{e}");
    drop(dev);
    let dev = service().open(&cfg).unwrap();
    assert!(read_all(&dev) == after, "a fresh service reads the same");
    // The lowers are untouched.
    let cfg_ro = write_config(
        d,
        "ro.json",
        &json!({"lowers": [{"file": l0}, {"file": l1}]}),
    );
    let ro = svc.open(&cfg_ro).unwrap();
    assert!(read_all(&ro) != after);
}

#[test]
fn append_upper_over_lowers() {
    upper_over_lowers(false);
}

#[test]
fn sparse_upper_over_lowers() {
    upper_over_lowers(true);
}

#[test]
fn upper_without_lowers() {
    let dir = tempfile::tempdir().unwrap();
    let (ud, ui) = create_upper(dir.path(), "u", 8 << 20, false);
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"upper": {"data": ud, "index": ui}}),
    );
    let dev = service().open(&cfg).unwrap();
    assert_eq!((dev.size(), dev.info().lowers), (8 << 20, 0));
    assert!(dev.stack().is_none());
    assert!(read_all(&dev).iter().all(|&b| b == 0));
    check_block_device(&dev, 512, 200, 11);
}

#[test]
fn upper_smaller_than_lowers_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let (ud, ui) = create_upper(d, "u", VSIZE / 2, true);
    let cfg = write_config(
        d,
        "c.json",
        &json!({"lowers": [{"file": l0}],
        "upper": {"data": ud, "index": ui}}),
    );
    let dev = service().open(&cfg).unwrap();
    assert_eq!(dev.size(), VSIZE / 2);
    assert!(read_all(&dev) == model[..VSIZE as usize / 2]);
    assert!(dev.info().warnings.iter().any(|w| w.contains("smaller")));
}

#[test]
fn files_that_are_not_writable_layers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let sealed = sealed_layer(d, "s", &mut model.clone(), 2);
    let junk = d.join("junk");
    std::fs::write(&junk, b"hello").unwrap();
    let (_, ui) = create_upper(d, "u", VSIZE, false);
    for (data, what) in [
        (&l0, "not a writable"),
        (&sealed, "sealed"),
        (&junk, "no LSMT header"),
    ] {
        let cfg = write_config(
            d,
            "c.json",
            &json!({"lowers": [{"file": l0}],
            "upper": {"data": data, "index": ui}}),
        );
        let e = service().open(&cfg).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: upper: {}", cfg.display(), data.display()))
                && msg.contains(what),
            "{msg}"
        );
    }
    let cfg = write_config(
        d,
        "c.json",
        &json!({"lowers": [{"file": l0}],
        "upper": {"data": d.join("nope.data"), "index": ui}}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("nope.data"), "{e}");
}

#[test]
fn torn_index_entry_is_reported_as_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ud, ui) = create_upper(d, "u", VSIZE, false);
    {
        let cfg = write_config(d, "c.json", &json!({"upper": {"data": ud, "index": ui}}));
        let dev = service().open(&cfg).unwrap();
        dev.write_at(&[9u8; 4096], 8192).unwrap();
        dev.flush().unwrap();
    }
    // A crash in the middle of appending the next entry leaves a partial record.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&ui)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let dev = service().open(&d.join("c.json")).unwrap();
    assert!(
        dev.info().warnings.iter().any(|w| w.contains("torn")),
        "{:?}",
        dev.info().warnings
    );
    assert_eq!(dev.read_vec(8192, 4096).unwrap(), vec![9u8; 4096]);
}

/// What a discard over lower data looks like after reopening: an append layer records it
/// (zeros stay), a sparse layer only punches a hole (the lower shows through again), as
/// upstream's `LSMTSparseFile` does.
#[test]
fn discard_then_reopen() {
    for sparse in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut model = vec![0u8; VSIZE as usize];
        let l0 = committed_layer(d, "l0", &mut model, 1);
        let (ud, ui) = create_upper(d, "u", VSIZE, sparse);
        let cfg = write_config(
            d,
            "c.json",
            &json!({"lowers": [{"file": l0}],
            "upper": {"data": ud, "index": ui}}),
        );
        let lower_nonzero = (2..VSIZE as usize / 4096)
            .find(|b| model[b * 4096..(b + 1) * 4096].iter().any(|&x| x != 0))
            .expect("a written lower block") as u64
            * 4096;
        {
            let dev = service().open(&cfg).unwrap();
            dev.write_at(&[0xAB; 8192], 0).unwrap();
            dev.discard(lower_nonzero, 4096).unwrap();
            assert_eq!(dev.read_vec(lower_nonzero, 4096).unwrap(), vec![0u8; 4096]);
            dev.flush().unwrap();
        }
        let dev = service().open(&cfg).unwrap();
        assert_eq!(
            dev.read_vec(0, 8192).unwrap(),
            vec![0xAB; 8192],
            "sparse={sparse}"
        );
        let want = if sparse {
            model[lower_nonzero as usize..lower_nonzero as usize + 4096].to_vec()
        } else {
            vec![0u8; 4096]
        };
        assert_eq!(
            dev.read_vec(lower_nonzero, 4096).unwrap(),
            want,
            "sparse={sparse}"
        );
    }
}
