//! Build layers with the tools the way users do, and check every refusal is clear.

mod common;

use common::*;

#[test]
fn create_write_commit_stack_merge() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let vsize = 64u64 << 20;
    let mut model = vec![0u8; vsize as usize];

    // Layer 1: append layer, two writes.
    ok(bin("overlaybd-create")
        .args(["--vsize-bytes", &vsize.to_string()])
        .arg(p("a.data"))
        .arg(p("a.index"))
        .arg("1"));
    let d1 = mixed(3 << 20, 1);
    ok_with_stdin(
        bin("obd")
            .args(["write", "--offset", "1048576"])
            .arg(p("a.data"))
            .arg(p("a.index")),
        &d1,
    );
    model[1 << 20..(1 << 20) + d1.len()].copy_from_slice(&d1);
    let d2 = mixed(8192, 2);
    ok_with_stdin(
        bin("obd")
            .args(["write", "--offset", "2097152"])
            .arg(p("a.data"))
            .arg(p("a.index")),
        &d2,
    );
    model[2 << 20..(2 << 20) + 8192].copy_from_slice(&d2);
    assert!(ok(bin("obd").arg("read").arg(p("a.data")).arg(p("a.index"))) == model);
    ok(bin("overlaybd-commit")
        .arg("-z")
        .arg(p("a.data"))
        .arg(p("a.index"))
        .arg(p("a.zfile")));
    assert!(ok(bin("obd").arg("read").arg(p("a.zfile"))) == model);

    // Layer 2: sparse layer on top, written through the stack read check.
    ok(bin("obd")
        .args(["create", "-s", "--vsize-bytes", &vsize.to_string()])
        .arg(p("b.data"))
        .arg(p("b.index"))
        .arg("1"));
    let d3 = mixed(1 << 20, 3);
    ok_with_stdin(
        bin("obd")
            .args(["write", "--offset", "1572864"])
            .arg(p("b.data"))
            .arg(p("b.index")),
        &d3,
    );
    model[1572864..1572864 + d3.len()].copy_from_slice(&d3);
    let stack = ok(bin("obd")
        .arg("read")
        .arg(p("a.zfile"))
        .arg(p("b.data"))
        .arg(p("b.index")));
    assert!(stack == model);
    ok(bin("obd")
        .args(["commit", "-t"])
        .arg(p("b.data"))
        .arg(p("b.index"))
        .arg(p("b.tar")));
    assert!(ok(bin("obd").arg("read").arg(p("a.zfile")).arg(p("b.tar"))) == model);

    // Merge both into one layer.
    ok(bin("obd")
        .arg("merge")
        .arg(p("a.zfile"))
        .arg(p("b.tar"))
        .arg(p("m.zfile")));
    assert!(ok(bin("obd").arg("read").arg(p("m.zfile"))) == model);
}

#[test]
fn writes_must_be_sector_aligned_unless_padded() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("d"), dir.path().join("i"));
    ok(bin("obd")
        .args(["create", "--vsize-bytes", "1048576"])
        .arg(&d)
        .arg(&i)
        .arg("1"));
    let e = fails(
        bin("obd")
            .args(["write", "--offset", "100"])
            .arg(&d)
            .arg(&i),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("multiple of 512"));
    let mut c = bin("obd");
    c.args(["write", "--offset", "512"]).arg(&d).arg(&i);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pad"));
    ok_with_stdin(
        bin("obd")
            .args(["write", "--pad", "--offset", "512"])
            .arg(&d)
            .arg(&i),
        b"hello",
    );
    let got = ok(bin("obd")
        .args(["read", "--offset", "512", "--len", "512"])
        .arg(&d)
        .arg(&i));
    assert_eq!(&got[..5], b"hello");
    assert!(got[5..].iter().all(|&b| b == 0));
    // Past the end of the device.
    let e = fails(
        bin("obd")
            .args(["read", "--offset", "1048576", "--len", "1"])
            .arg(&d)
            .arg(&i),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("past the end"));
}

#[test]
fn create_matches_upstream_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("d"), dir.path().join("i"));
    ok(bin("overlaybd-create")
        .args([
            "--uuid",
            "11111111-1111-4111-8111-111111111111",
            "--vsize-bytes",
            "67108864",
        ])
        .arg(&d)
        .arg(&i)
        .arg("1"));
    assert!(
        std::fs::read(&d).unwrap() == std::fs::read(fixture("a_create/helper/rw64m.data")).unwrap()
    );
    assert!(
        std::fs::read(&i).unwrap()
            == std::fs::read(fixture("a_create/helper/rw64m.index")).unwrap()
    );
    // The GiB form: the header says 1 GiB, like upstream's rw1g files (apart from the UUID).
    let (d, i) = (dir.path().join("g.d"), dir.path().join("g.i"));
    ok(bin("overlaybd-create").arg(&d).arg(&i).arg("1"));
    let ours = std::fs::read(&d).unwrap();
    let theirs = std::fs::read(fixture("a_create/tool/rw1g.data")).unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours[..0x38], theirs[..0x38]);
    assert_eq!(ours[0x5d..], theirs[0x5d..]);
    // Existing files are never overwritten.
    let e = fails(bin("overlaybd-create").arg(&d).arg(&i).arg("1"));
    assert!(!e.stderr.is_empty());
}

#[test]
fn unsupported_flags_fail_clearly_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, i) = (dir.path().join("d"), dir.path().join("i"));
    for flag in ["--turboOCI", "--hybrid"] {
        let e = fails(bin("overlaybd-create").arg(flag).arg(&d).arg(&i).arg("1"));
        assert!(
            String::from_utf8_lossy(&e.stderr).contains("not supported yet"),
            "{flag}"
        );
        assert!(!d.exists() && !i.exists(), "{flag} created files");
    }
    ok(bin("overlaybd-create").arg(&d).arg(&i).arg("1"));
    let out = dir.path().join("out");
    for args in [
        &["--upload", "http://127.0.0.1:1/v2/x/blobs/uploads/"][..],
        &["--turboOCI"][..],
    ] {
        let e = fails(bin("overlaybd-commit").args(args).arg(&d).arg(&i).arg(&out));
        assert!(
            String::from_utf8_lossy(&e.stderr).contains("not supported yet"),
            "{args:?}"
        );
        assert!(!out.exists());
    }
    let e = fails(
        bin("overlaybd-merge")
            .args(["--upload", "x"])
            .arg(&d)
            .arg(&out),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("not supported yet"));
    // Bad option values.
    let e = fails(
        bin("overlaybd-commit")
            .args(["-z", "--bs", "3"])
            .arg(&d)
            .arg(&i)
            .arg(&out),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("--bs"));
    let e = fails(
        bin("overlaybd-commit")
            .args(["-z", "--algorithm", "lzo"])
            .arg(&d)
            .arg(&i)
            .arg(&out),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("--algorithm"));
    assert!(!out.exists());
}

#[test]
fn corrupt_files_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.lsmt");
    let mut bytes = std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap();
    let n = bytes.len();
    bytes[n - 4096] ^= 0xFF; // trailer magic
    std::fs::write(&bad, &bytes).unwrap();
    let e = fails(bin("obd").arg("read").arg(&bad));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("bad.lsmt") && msg.contains("offset"), "{msg}");

    let badz = dir.path().join("bad.zfile");
    let mut z = std::fs::read(fixture("b_commit/layers/l1.lz4.bs4k.zfile")).unwrap();
    z[5000] ^= 0x55; // inside a compressed block: the block CRC catches it
    std::fs::write(&badz, &z).unwrap();
    let e = fails(bin("obd").arg("read").arg(&badz));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("bad.zfile") && msg.contains("offset"), "{msg}");
    fails(bin("overlaybd-zfile").arg("--verify").arg(&badz));

    let missing = dir.path().join("missing");
    let e = fails(bin("obd").arg("inspect").arg(&missing));
    assert!(String::from_utf8_lossy(&e.stderr).contains("missing"));
    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, r#"{"lowers": [{"file": 7}]}"#).unwrap();
    let e = fails(bin("obd").arg("read").arg(&cfg));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("c.json") && msg.contains("lowers"), "{msg}");
}
