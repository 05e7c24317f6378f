//! The tools read upstream's golden files and reproduce upstream's outputs.

mod common;

use common::*;

const UUID1: &str = "11111111-1111-4111-8111-111111111111";

fn read_all(files: &[std::path::PathBuf]) -> Vec<u8> {
    ok(bin("obd").arg("read").args(files))
}

#[test]
fn reads_committed_layers_and_stacks() {
    let l1 = fixture("b_commit/layers/l1.lsmt");
    let l2 = fixture("b_commit/layers/l2.lsmt");
    let dev1 = read_all(std::slice::from_ref(&l1));
    assert_eq!(dev1.len(), 64 << 20);
    assert_eq!(sha256(&dev1), expected("b_commit", "device_after_layer1"));
    let dev2 = read_all(&[l1.clone(), l2.clone()]);
    assert_eq!(sha256(&dev2), expected("b_commit", "device_after_layer2"));
    // The ZFile-compressed commit of layer 1 reads the same device.
    let z = read_all(&[fixture("b_commit/layers/l1.lz4.bs4k.zfile")]);
    assert_eq!(sha256(&z), expected("b_commit", "device_after_layer1"));
    // --offset/--len read a range.
    let part = ok(bin("obd")
        .args(["read", "--offset", "1048576", "--len", "65536"])
        .arg(&l1));
    assert_eq!(part, dev1[1048576..1048576 + 65536]);
}

#[test]
fn reads_the_uncommitted_writable_layer() {
    let dev = read_all(&[
        fixture("b_commit/rw/l1.data"),
        fixture("b_commit/rw/l1.index"),
    ]);
    assert_eq!(sha256(&dev), expected("b_commit", "device_after_layer1"));
    // Over a lower layer, the writable layer is the top.
    let dev = read_all(&[
        fixture("b_commit/layers/l1.lsmt"),
        fixture("b_commit/rw/l1.data"),
        fixture("b_commit/rw/l1.index"),
    ]);
    assert_eq!(sha256(&dev), expected("b_commit", "device_after_layer1"));
}

#[test]
fn commit_reproduces_upstream_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l1.lsmt");
    ok(bin("overlaybd-commit")
        .arg(fixture("b_commit/rw/l1.data"))
        .arg(fixture("b_commit/rw/l1.index"))
        .arg(&out)
        .args(["--uuid", UUID1]));
    let ours = std::fs::read(&out).unwrap();
    let theirs = std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap();
    assert!(ours == theirs, "commit differs from upstream's l1.lsmt");
    // An existing output is refused without -f, replaced with it.
    let e = fails(
        bin("overlaybd-commit")
            .arg(fixture("b_commit/rw/l1.data"))
            .arg(fixture("b_commit/rw/l1.index"))
            .arg(&out),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("-f"));
    ok(bin("overlaybd-commit")
        .arg("-f")
        .arg(fixture("b_commit/rw/l1.data"))
        .arg(fixture("b_commit/rw/l1.index"))
        .arg(&out)
        .args(["--uuid", UUID1]));
    assert!(std::fs::read(&out).unwrap() == theirs);
}

#[test]
fn compressed_commits_read_back_in_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected("b_commit", "device_after_layer1");
    for (algo, bs) in [("lz4", "4"), ("lz4", "64"), ("zstd", "4"), ("zstd", "32")] {
        for tar in [false, true] {
            let out = dir.path().join(format!("l1.{algo}.{bs}.{tar}"));
            let mut c = bin("overlaybd-commit");
            c.arg("-z")
                .args(["--algorithm", algo, "--bs", bs, "--uuid", UUID1]);
            if tar {
                c.arg("-t");
            }
            ok(c.arg(fixture("b_commit/rw/l1.data"))
                .arg(fixture("b_commit/rw/l1.index"))
                .arg(&out));
            assert_eq!(
                sha256(&read_all(std::slice::from_ref(&out))),
                want,
                "{algo} {bs} tar={tar}"
            );
            let info = String::from_utf8(ok(bin("obd").arg("inspect").arg(&out))).unwrap();
            assert!(info.contains(&format!("zfile.algorithm: {algo}")), "{info}");
            assert!(info.contains("zfile.header_overwrite: yes"), "{info}");
            assert!(info.contains(&format!("lsmt.uuid: {UUID1}")), "{info}");
            assert_eq!(info.contains("tar: payload at offset 1536"), tar, "{info}");
            // Extracting the ZFile gives exactly the plain commit (upstream's l1.lsmt).
            let x = dir.path().join(format!("x.{algo}.{bs}.{tar}"));
            ok(bin("overlaybd-zfile").arg("-x").arg(&out).arg(&x));
            let plain = std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap();
            assert!(std::fs::read(&x).unwrap() == plain, "{algo} {bs} tar={tar}");
        }
    }
}

#[test]
fn tar_wrapped_blob_is_a_valid_tar() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("blob.tar");
    ok(bin("overlaybd-commit")
        .args(["-t", "--uuid", UUID1])
        .arg(fixture("b_commit/rw/l1.data"))
        .arg(fixture("b_commit/rw/l1.index"))
        .arg(&out));
    if std::process::Command::new("tar")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping the GNU tar check: tar is not installed");
        return;
    }
    let listing = ok(std::process::Command::new("tar").arg("-tf").arg(&out));
    assert_eq!(String::from_utf8_lossy(&listing).trim(), "overlaybd.commit");
    let payload = ok(std::process::Command::new("tar").arg("-xOf").arg(&out));
    assert!(payload == std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap());
}

#[test]
fn merge_flattens_a_stack() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = fixture("b_commit/layers/l1.lsmt");
    let l2 = fixture("b_commit/layers/l2.lsmt");
    let want = expected("b_commit", "device_after_layer2");
    // obd merge with layer files; default output is a ZFile.
    let out = dir.path().join("merged.zfile");
    ok(bin("obd").arg("merge").arg(&l1).arg(&l2).arg(&out));
    assert_eq!(sha256(&read_all(std::slice::from_ref(&out))), want);
    assert!(
        String::from_utf8(ok(bin("obd").arg("inspect").arg(&out)))
            .unwrap()
            .contains("zfile: yes")
    );
    // overlaybd-merge with a config, uncompressed and tar-wrapped.
    let cfg = dir.path().join("config.v1.json");
    let json = serde_json::json!({
        "lowers": [{"file": l1}, {"file": l2}],
        "resultFile": dir.path().join("result"),
        "someFutureField": true
    });
    std::fs::write(&cfg, json.to_string()).unwrap();
    let out2 = dir.path().join("merged.tar");
    ok(bin("overlaybd-merge")
        .args(["--compress=false", "-t"])
        .arg(&cfg)
        .arg(&out2));
    assert_eq!(sha256(&read_all(std::slice::from_ref(&out2))), want);
    let info = String::from_utf8(ok(bin("obd").arg("inspect").arg(&out2))).unwrap();
    assert!(
        info.contains("zfile: no") && info.contains("tar: payload"),
        "{info}"
    );
    // obd read of the config reads the same stack.
    assert_eq!(sha256(&read_all(&[cfg])), want);
}

#[test]
fn seal_and_commit_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("l1.data");
    let index = dir.path().join("l1.index");
    std::fs::copy(fixture("b_commit/rw/l1.data"), &data).unwrap();
    std::fs::copy(fixture("b_commit/rw/l1.index"), &index).unwrap();
    ok(bin("overlaybd-commit").arg("--seal").arg(&data).arg(&index));
    let want = expected("b_commit", "device_after_layer1");
    assert_eq!(sha256(&read_all(std::slice::from_ref(&data))), want);
    let out = dir.path().join("c.lsmt");
    ok(bin("overlaybd-commit")
        .args(["--commit_sealed", "--uuid", UUID1])
        .arg(&data)
        .arg(&out));
    // Compacting the sealed file equals committing the writable layer.
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(fixture("b_commit/layers/l1.lsmt")).unwrap()
    );
    // The sealed fixture from upstream.
    let sealed = read_all(&[fixture("a_create/sealed/small64m.sealed")]);
    assert_eq!(sha256(&sealed), expected("a_create", "small64m.sealed"));
}

#[test]
fn zfile_tool_matches_upstream_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("c_zfile/inputs/odd1000003.bin");
    let original = std::fs::read(&input).unwrap();
    // Upstream's files extract to the input.
    for f in [
        "odd1000003.lz4.bs4k.crc.zfile",
        "odd1000003.zstd.bs4k.nocrc.zfile",
    ] {
        let x = ok(bin("overlaybd-zfile")
            .arg("-x")
            .arg(fixture(&format!("c_zfile/out/{f}")))
            .arg("-"));
        assert!(x == original, "{f}");
    }
    // --verify: CRC file is valid, the no-CRC file is not (as upstream).
    ok(bin("overlaybd-zfile")
        .arg("--verify")
        .arg(fixture("c_zfile/out/odd1000003.lz4.bs4k.crc.zfile")));
    fails(
        bin("overlaybd-zfile")
            .arg("--verify")
            .arg(fixture("c_zfile/out/odd1000003.zstd.bs4k.nocrc.zfile")),
    );
    // Our compression: same header fields as upstream's, and the file round-trips.
    let ours = dir.path().join("ours.zfile");
    ok(bin("overlaybd-zfile").arg(&input).arg(&ours));
    let a = String::from_utf8(ok(bin("obd").arg("inspect").arg(&ours))).unwrap();
    let b = String::from_utf8(ok(bin("obd")
        .arg("inspect")
        .arg(fixture("c_zfile/out/odd1000003.lz4.bs4k.crc.zfile"))))
    .unwrap();
    for key in [
        "zfile.blocks",
        "zfile.block_size",
        "zfile.original_size",
        "zfile.header_overwrite",
    ] {
        let pick = |s: &str| s.lines().find(|l| l.starts_with(key)).unwrap().to_string();
        assert_eq!(pick(&a), pick(&b));
    }
    let x = ok(bin("overlaybd-zfile").arg("-x").arg(&ours).arg("-"));
    assert!(x == original);
    // Tar-wrapped output, verify from stdin.
    let t = dir.path().join("ours.tar");
    ok(bin("overlaybd-zfile")
        .args(["-t", "--algorithm", "zstd", "--bs", "16"])
        .arg(&input)
        .arg(&t));
    ok_with_stdin(
        bin("overlaybd-zfile").arg("--verify"),
        &std::fs::read(&t).unwrap(),
    );
    let x = ok(bin("overlaybd-zfile").arg("-x").arg(&t).arg("-"));
    assert!(x == original);
}

#[test]
fn reads_upstreams_2021_base_layer() {
    let f = fixture("e_real/ext4_64");
    let info = String::from_utf8(ok(bin("obd").arg("inspect").arg(&f))).unwrap();
    assert!(info.contains("lsmt.vsize: 68719476736"), "{info}");
    assert!(info.contains("zfile.original_size: 541937664"), "{info}");
    // The ext4 superblock at 1024: magic 0xEF53, 16777216 blocks, the documented FS UUID.
    let sb = ok(bin("obd")
        .args(["read", "--offset", "1024", "--len", "1024"])
        .arg(&f));
    assert_eq!(&sb[56..58], &[0x53, 0xEF]);
    assert_eq!(u32::from_le_bytes(sb[4..8].try_into().unwrap()), 16_777_216);
    assert_eq!(
        hex::encode(&sb[104..120]),
        "3d8b79fe5d5f40cea25b45f392bdf32b"
    );
    ok(bin("overlaybd-zfile").arg("--verify").arg(&f));
}
