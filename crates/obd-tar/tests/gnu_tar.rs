//! Interoperability with GNU tar: it lists and extracts what we write, and we find the payload
//! of single-file archives it writes in each of its formats.

mod common;

use std::fs;
use std::path::Path;

use obd_core::{FileDevice, ReadAt};
use obd_tar::layout::{self, HEADER_LEN};
use obd_tar::{EntryMeta, open_payload_entry, wrap_file, wrap_file_with};

use common::{payload, tar};

#[test]
fn gnu_tar_lists_and_extracts_our_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [0usize, 1, 511, 512, 513, 1_000_003]
        .into_iter()
        .enumerate()
    {
        let data = payload(len, i as u64);
        let src = dir.path().join(format!("in{i}"));
        let dst = dir.path().join(format!("out{i}.tar"));
        fs::write(&src, &data).unwrap();
        let entry = wrap_file_with(&src, &dst, &EntryMeta::default()).unwrap();
        assert_eq!(
            (entry.data_offset, entry.size),
            (HEADER_LEN, Some(len as u64))
        );

        let listing =
            String::from_utf8(tar(dir.path(), &["-tvf", &format!("out{i}.tar")])).unwrap();
        let fields: Vec<&str> = listing.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "one entry expected: {listing}");
        assert_eq!(fields[0], "-rw-r--r--", "{listing}");
        assert_eq!(fields[1], "root/root", "{listing}");
        assert_eq!(fields[2], len.to_string(), "{listing}");
        assert_eq!(fields[3], "1970-01-01", "{listing}");
        assert_eq!(fields[5], "overlaybd.commit", "{listing}");

        let out = tar(dir.path(), &["-xOf", &format!("out{i}.tar")]);
        assert!(out == data, "tar -xO of a {len}-byte payload differs");
    }
}

#[test]
fn gnu_tar_sees_mode_and_mtime_we_chose() {
    let dir = tempfile::tempdir().unwrap();
    let data = payload(4000, 9);
    fs::write(dir.path().join("in"), &data).unwrap();
    let meta = EntryMeta {
        name: "layer.zfile".into(),
        mode: 0o100600,
        mtime: 1_700_000_000,
    };
    wrap_file_with(&dir.path().join("in"), &dir.path().join("out.tar"), &meta).unwrap();
    let listing = String::from_utf8(tar(
        dir.path(),
        &["--utc", "--full-time", "-tvf", "out.tar"],
    ))
    .unwrap();
    let words = listing.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        words,
        "-rw------- root/root 4000 2023-11-14 22:13:20 layer.zfile"
    );
    assert_eq!(tar(dir.path(), &["-xOf", "out.tar", "layer.zfile"]), data);
}

#[test]
fn wrap_file_uses_the_output_mode_and_zero_mtime_like_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in"), dir.path().join("out.tar"));
    fs::write(&src, b"hello").unwrap();
    let entry = wrap_file(&src, &dst).unwrap();
    assert_eq!(entry.name, "overlaybd.commit");
    let file = fs::read(&dst).unwrap();
    let mode = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&dst).unwrap().mode()
    };
    let field = format!("{mode:6o} \0");
    assert_eq!(&file[1024 + 100..1024 + 108], field.as_bytes());
    assert_eq!(
        &file[1024 + 136..1024 + 148],
        b"          0 ",
        "mtime 0 as upstream"
    );
    // An existing destination is never overwritten.
    let e = wrap_file(&src, &dst).unwrap_err();
    assert_eq!(e.kind(), obd_core::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(e.path(), Some(dst.as_path()));
    assert_eq!(fs::read(&dst).unwrap(), file);
    // A missing source names itself and leaves nothing behind.
    let e = wrap_file(&dir.path().join("nope"), &dir.path().join("o2")).unwrap_err();
    assert_eq!(e.kind(), obd_core::ErrorKind::NotFound, "{e}");
    assert!(!dir.path().join("o2").exists());
}

/// Make a one-file archive with GNU tar in `format` and return (archive path, payload).
fn gnu_archive(dir: &Path, format: &str, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data = payload(len, len as u64);
    let src_dir = dir.join(format!("src-{format}"));
    fs::create_dir_all(&src_dir).unwrap();
    fs::write(src_dir.join(name), &data).unwrap();
    let archive = dir.join(format!("{format}-{len}.tar"));
    tar(
        &src_dir,
        &[
            &format!("--format={format}"),
            "-cf",
            archive.to_str().unwrap(),
            name,
        ],
    );
    (archive, data)
}

fn check_gnu(format: &str, name: &str, len: usize, want_offset: u64, want_pax: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (archive, data) = gnu_archive(dir.path(), format, name, len);
    let bytes = fs::read(&archive).unwrap();
    assert_eq!(
        bytes[156] == b'x',
        want_pax,
        "{format}: PAX header expected: {want_pax}"
    );
    let dev = FileDevice::open(&archive).unwrap();
    let (payload, entry) = open_payload_entry(dev).unwrap();
    let entry = entry.expect("GNU tar output is detected");
    assert_eq!(entry.data_offset, want_offset, "{format}");
    assert_eq!(entry.size, Some(len as u64), "{format}");
    assert_eq!(entry.name, name, "{format}");
    assert_eq!(payload.size(), len as u64);
    assert!(
        payload.read_vec(0, len).unwrap() == data,
        "{format}: payload differs"
    );
    assert_eq!(payload.path(), Some(archive.as_path()));
    // The same answer from the pure function on the first 4 KiB.
    assert_eq!(
        layout::detect(&bytes[..4096.min(bytes.len())]).unwrap(),
        Some(entry)
    );
}

#[test]
fn reads_gnu_tar_ustar_format() {
    check_gnu("ustar", "layer.bin", 100_000, 512, false);
    check_gnu("ustar", "empty", 0, 512, false);
    // ustar splits long names into prefix + name.
    let long = format!("{}/{}", "d".repeat(80), "f".repeat(60));
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("s").join("d".repeat(80))).unwrap();
    fs::write(dir.path().join("s").join(&long), b"deep").unwrap();
    tar(
        &dir.path().join("s"),
        &["--format=ustar", "-cf", "../a.tar", &long],
    );
    let e = layout::detect(&fs::read(dir.path().join("a.tar")).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.name.as_str(), e.size, e.data_offset),
        (long.as_str(), Some(4), 512)
    );
}

#[test]
fn reads_gnu_tar_gnu_format() {
    check_gnu("gnu", "layer.bin", 70_001, 512, false);
    // A name over 100 bytes makes GNU tar write a ././@LongLink ('L') entry first.
    let long = "n".repeat(150);
    check_gnu("gnu", &long, 3000, 512 * 3, false);
}

#[test]
fn reads_gnu_tar_pax_format() {
    // A name over 100 bytes forces an extended header with a `path` record.
    let long = "p".repeat(150);
    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = gnu_archive(dir.path(), "pax", &long, 5000);
    let bytes = fs::read(&archive).unwrap();
    let pax_len = layout::detect(&bytes).unwrap().unwrap().data_offset;
    assert!(
        pax_len >= 1536,
        "PAX header + records + entry header: {pax_len}"
    );
    check_gnu("pax", &long, 5000, pax_len, true);
}

#[test]
fn reads_gnu_tar_pax_format_without_extended_header() {
    // GNU tar writes an extended header only when something needs one.
    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = gnu_archive(dir.path(), "pax", "short", 10);
    let bytes = fs::read(&archive).unwrap();
    let e = layout::detect(&bytes).unwrap().unwrap();
    let want = if bytes[156] == b'x' {
        e.data_offset
    } else {
        512
    };
    check_gnu("pax", "short", 10, want, bytes[156] == b'x');
}
