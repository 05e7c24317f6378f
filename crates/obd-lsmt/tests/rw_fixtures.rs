//! Writable layers against files written by upstream tools (tests/fixtures/a_create, b_commit).

mod rw_common;

use std::sync::Arc;

use obd_core::{BlockDevice, ErrorKind, FileDevice, ReadAt};
use obd_lsmt::layout::{HT_SIZE, HeaderTrailer, NIL_UUID};
use obd_lsmt::{
    AppendLayer, CommitMeta, CreateOptions, LsmtLayer, SparseLayer, WritableLayer, seal_in_place,
};
use rw_common::*;

fn opts(uuid: &str, parent: Option<&str>) -> CreateOptions {
    CreateOptions {
        uuid: Some(uuid.into()),
        parent_uuid: parent.map(Into::into),
    }
}

#[test]
fn create_append_matches_upstream_helper() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("rw.data"), dir.path().join("rw.index"));
    let layer = AppendLayer::create(&d, &i, 64 << 20, opts(UUID1, None)).unwrap();
    assert_eq!(layer.vsize(), 64 << 20);
    assert_eq!(layer.uuid(), UUID1);
    assert_eq!(layer.parent_uuid(), NIL_UUID);
    drop(layer);
    assert!(std::fs::read(&d).unwrap() == bytes("a_create/helper/rw64m.data"));
    assert!(std::fs::read(&i).unwrap() == bytes("a_create/helper/rw64m.index"));
}

#[test]
fn create_append_with_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("rw.data"), dir.path().join("rw.index"));
    let parent = "22222222-2222-4222-8222-222222222222";
    AppendLayer::create(&d, &i, 64 << 20, opts(UUID1, Some(parent))).unwrap();
    for (path, fixture) in [
        (&d, "a_create/helper/rw64m.data"),
        (&i, "a_create/helper/rw64m.index"),
    ] {
        let got = std::fs::read(path).unwrap();
        let mut want = bytes(fixture);
        // parent_uuid lives at bytes 93..130 (36 chars + NUL).
        want[93..129].copy_from_slice(parent.as_bytes());
        assert!(got == want);
        assert_eq!(HeaderTrailer::decode(&got).unwrap().parent_uuid, parent);
    }
    let l = AppendLayer::open(&d, &i).unwrap();
    assert_eq!(l.parent_uuid(), parent);
}

#[test]
fn create_with_random_uuid_matches_tool_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("a"), dir.path().join("b"));
    AppendLayer::create(&d, &i, 1 << 30, CreateOptions::default()).unwrap();
    for (path, fixture) in [
        (&d, "a_create/tool/rw1g.data"),
        (&i, "a_create/tool/rw1g.index"),
    ] {
        let mut got = std::fs::read(path).unwrap();
        let mut want = bytes(fixture);
        let uuid = HeaderTrailer::decode(&got).unwrap().uuid;
        // A random version-4 UUID in upper case, like the tool's.
        assert!(obd_lsmt::writable::is_uuid_text(&uuid), "{uuid}");
        assert_eq!(uuid, uuid.to_ascii_uppercase());
        assert_eq!(&uuid[14..15], "4");
        got[0x38..0x5c].fill(0);
        want[0x38..0x5c].fill(0);
        assert!(
            got == want,
            "{} differs from the tool's beyond the uuid",
            path.display()
        );
    }
}

#[test]
fn create_sparse_matches_upstream_helper() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("s.data"), dir.path().join("s.index"));
    let l = SparseLayer::create(&d, &i, 64 << 20, opts(UUID1, None)).unwrap();
    assert_eq!(l.vsize(), 64 << 20);
    assert!(l.segments().is_empty());
    drop(l);
    let data = std::fs::read(&d).unwrap();
    assert_eq!(data.len(), 4096 + (64 << 20));
    assert!(data[..4096] == bytes("a_create/helper/sparse64m.data.head4096"));
    assert_eq!(std::fs::metadata(&i).unwrap().len(), 0);
    // Only the header is allocated.
    let l = SparseLayer::open(&d).unwrap();
    assert!(l.segments().is_empty());
}

#[test]
fn create_refuses_existing_files_and_leaves_them_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("d"), dir.path().join("i"));
    std::fs::write(&d, b"precious").unwrap();
    let e = AppendLayer::create(&d, &i, 1 << 20, CreateOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(e.path(), Some(d.as_path()));
    assert_eq!(std::fs::read(&d).unwrap(), b"precious");
    assert!(!i.exists());
    // Index exists: the data file created first is removed again.
    std::fs::remove_file(&d).unwrap();
    std::fs::write(&i, b"precious").unwrap();
    let e = AppendLayer::create(&d, &i, 1 << 20, CreateOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(!d.exists());
    assert_eq!(std::fs::read(&i).unwrap(), b"precious");
    let e = SparseLayer::create(&d, &i, 1 << 20, CreateOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(!d.exists());
    // Bad arguments.
    for vsize in [0, 1000] {
        let e = AppendLayer::create(&d, &dir.path().join("x"), vsize, CreateOptions::default());
        assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let bad = CreateOptions {
        uuid: Some("not-a-uuid".into()),
        parent_uuid: None,
    };
    let e = AppendLayer::create(&d, &dir.path().join("x"), 4096, bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!d.exists());
}

/// Recreate b_commit's layer 1 from its ops (payloads taken from the upstream data file,
/// where they sit in write order) and compare both files byte for byte.
#[test]
fn writes_reproduce_upstream_layer_files() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("l1.data"), dir.path().join("l1.index"));
    let up_data = bytes("b_commit/rw/l1.data");
    let layer = AppendLayer::create(&d, &i, 64 << 20, opts(UUID1, None)).unwrap();
    apply(
        &layer,
        &ops("b_commit/inputs/layer1.ops"),
        &up_data[HT_SIZE..],
    );
    layer.flush().unwrap();
    assert_eq!(
        sha256_dev(&layer),
        expected("b_commit", "device_after_layer1")
    );
    drop(layer);
    assert!(std::fs::read(&d).unwrap() == up_data);
    assert!(std::fs::read(&i).unwrap() == bytes("b_commit/rw/l1.index"));
}

#[test]
fn upstream_layer_reads_and_commits_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = copy_fixture("b_commit/rw/l1.data", dir.path());
    let i = copy_fixture("b_commit/rw/l1.index", dir.path());
    let layer = AppendLayer::open(&d, &i).unwrap();
    assert!(layer.warnings().is_empty());
    assert_eq!(layer.uuid(), UUID1);
    assert_eq!(
        sha256_dev(&layer),
        expected("b_commit", "device_after_layer1")
    );
    let want = bytes("b_commit/layers/l1.lsmt");
    let meta = CommitMeta {
        uuid: Some(UUID1.into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let stats = layer.commit(&mut out, &meta).unwrap();
    assert_eq!(stats.file_size, want.len() as u64);
    assert!(out == want, "commit differs from upstream's l1.lsmt");
    // The file fast path and the trait object give the same bytes.
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("c.lsmt"))
        .unwrap();
    layer.commit_to_file(&f, &meta).unwrap();
    assert!(std::fs::read(dir.path().join("c.lsmt")).unwrap() == want);
    let dynl: &dyn WritableLayer = &layer;
    let mut out2 = Vec::new();
    dynl.commit(&mut out2, &meta).unwrap();
    assert!(out2 == want);
    // Read-only open works on read-only files and refuses writes.
    let ro = AppendLayer::open_read_only(
        &fixture("b_commit/rw/l1.data"),
        &fixture("b_commit/rw/l1.index"),
    )
    .unwrap();
    assert_eq!(ro.segments(), layer.segments());
    let e = ro.write_at(&[0u8; 512], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert!(ro.is_read_only());
}

#[test]
fn seal_matches_upstream_sealed_file() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("s.data"), dir.path().join("s.index"));
    let want = bytes("a_create/sealed/small64m.sealed");
    let layer = AppendLayer::create(&d, &i, 64 << 20, opts(UUID1, None)).unwrap();
    apply(&layer, &ops("a_create/sealed/small.ops"), &want[HT_SIZE..]);
    drop(layer);
    let index_before = std::fs::read(&i).unwrap();
    let info = seal_in_place(&d, &i).unwrap();
    assert_eq!(
        (info.index_offset, info.index_size, info.file_size),
        (16896, 4, 21504)
    );
    let got = std::fs::read(&d).unwrap();
    assert_eq!(got.len(), want.len());
    // Everything but upstream's uninitialised index padding (16960..17408) is identical;
    // we pad with zeros.
    assert!(got[..16960] == want[..16960]);
    assert!(got[16960..17408].iter().all(|&b| b == 0));
    assert!(got[17408..] == want[17408..]);
    // The header is left as it was; the index file is untouched.
    assert_eq!(HeaderTrailer::decode(&got).unwrap().flags, 0x3);
    assert_eq!(std::fs::read(&i).unwrap(), index_before);
    // It opens as a read-only layer and reads the expected device.
    let ro = LsmtLayer::open(FileDevice::open(&d).unwrap()).unwrap();
    assert_eq!(sha256_dev(&ro), expected("a_create", "small64m.sealed"));
    let up = LsmtLayer::open(FileDevice::open(fixture("a_create/sealed/small64m.sealed")).unwrap())
        .unwrap();
    assert_eq!(ro.segments(), up.segments());
    // A sealed layer no longer opens for writing.
    let e = AppendLayer::open(&d, &i).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("sealed"), "{e}");
}

#[test]
fn seal_of_empty_layer_matches_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("e.data"), dir.path().join("e.index"));
    AppendLayer::create(&d, &i, 64 << 20, opts(UUID1, None))
        .unwrap()
        .seal()
        .unwrap();
    let got = std::fs::read(&d).unwrap();
    assert_eq!(got.len(), 8192);
    let t = HeaderTrailer::decode(&got[4096..]).unwrap();
    assert_eq!((t.flags, t.index_offset, t.index_size), (0x6, 4096, 0));
    let ro = LsmtLayer::open(Arc::new(FileDevice::open(&d).unwrap()) as Arc<dyn ReadAt>).unwrap();
    assert_eq!(
        sha256_dev(&ro),
        expected("a_create", "empty64m.sealed device sha256")
    );
}

#[test]
fn sparse_seal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("s.data"), dir.path().join("s.index"));
    SparseLayer::create(&d, &i, 1 << 20, CreateOptions::default()).unwrap();
    assert_eq!(
        seal_in_place(&d, &i).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
}
