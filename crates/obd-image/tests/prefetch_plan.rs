//! Choosing record / replay / file list / nothing from `recordTracePath`, like upstream.

use obd_core::ErrorKind;
use obd_image::prefetch::{Plan, TraceRecord, encode, plan, plan_from_bytes};

#[test]
fn not_configured_is_none() {
    let p = plan(None).unwrap();
    assert_eq!(p.value, Plan::None);
    assert!(p.warnings.is_empty());
}

#[test]
fn missing_file_is_none_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace");
    let p = plan(Some(&path)).unwrap();
    assert_eq!(p.value, Plan::None);
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains(&path.display().to_string()),
        "{:?}",
        p.warnings
    );
}

#[test]
fn empty_file_means_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace");
    std::fs::write(&path, b"").unwrap();
    assert_eq!(plan(Some(&path)).unwrap().value, Plan::Record(path.clone()));
}

#[test]
fn binary_trace_means_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace");
    let recs = vec![
        TraceRecord::read(0, 0, 4096),
        TraceRecord::read(1, 8192, 512),
    ];
    std::fs::write(&path, encode(&recs)).unwrap();
    let p = plan(Some(&path)).unwrap();
    assert_eq!(p.value, Plan::Replay(recs));
    assert!(p.warnings.is_empty());
}

#[test]
fn corrupt_trace_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace");
    let mut b = encode(&[TraceRecord::read(0, 0, 4096)]);
    b[30] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let e = plan(Some(&path)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Checksum);
    assert_eq!(e.path(), Some(path.as_path()));
    assert_eq!(e.offset(), Some(16));
}

#[test]
fn text_means_file_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list");
    std::fs::write(&path, "/bin/sh\n/etc/\n").unwrap();
    assert_eq!(
        plan(Some(&path)).unwrap().value,
        Plan::FileList(vec!["/bin/sh".into(), "/etc/".into()])
    );
    // Shorter than a trace header, no magic: still a list (upstream does the same).
    assert_eq!(
        plan_from_bytes(b"/a").unwrap(),
        Plan::FileList(vec!["/a".into()])
    );
}

#[test]
fn bad_lists_and_odd_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list");
    std::fs::write(&path, "/ok\nnot/absolute\n").unwrap();
    let e = plan(Some(&path)).unwrap_err();
    assert_eq!(e.path(), Some(path.as_path()));
    assert!(e.to_string().contains("line 2"), "{e}");

    std::fs::write(&path, [0xFFu8, 0xFE, 0x00, 0x01]).unwrap();
    let e = plan(Some(&path)).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
    assert_eq!(e.path(), Some(path.as_path()));

    std::fs::write(&path, "/a\n".repeat(30_000)).unwrap();
    let e = plan(Some(&path)).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");

    let e = plan(Some(dir.path())).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(plan_from_bytes(b"").is_err());
    // The magic with a truncated header is a damaged trace, not a list.
    let e = plan_from_bytes(&0xC2EF_1820u32.to_le_bytes()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
}
