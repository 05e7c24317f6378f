//! config.v1.json: every field, unknown fields, every invalid field, validation rules.

use std::path::{Path, PathBuf};

use obd_core::ErrorKind;
use obd_image::config::device::{DeviceConfig, result_file_hint};
use obd_image::config::global::{DownloadConfig, GlobalConfig};

const NAME: &str = "/x/config.v1.json";

fn hex64(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn parse(text: &str) -> obd_image::Loaded<DeviceConfig> {
    DeviceConfig::parse(text, NAME).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Parse must fail with InvalidInput naming the file and `path`, mentioning `what`.
fn fails(text: &str, path: &str, what: &str) {
    let e = DeviceConfig::parse(text, NAME).expect_err(text);
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    let want = format!("{NAME}: {path}: ");
    assert!(
        msg.starts_with(&want),
        "{text}\n  got: {msg}\n  want prefix: {want}"
    );
    assert!(msg.contains(what), "{text}\n  got: {msg}\n  want: {what}");
}

#[test]
fn every_field_of_the_upstream_shapes() {
    let (d1, d2) = (
        format!("sha256:{}", hex64('a')),
        format!("sha256:{}", hex64('b')),
    );
    let text = format!(
        r#"{{ "repoBlobUrl": "https://registry-1.docker.io/v2/overlaybd/redis/blobs",
  "lowers": [ {{ "file": "/opt/overlaybd/baselayers/ext4_64" }},
              {{ "digest": "{d1}", "size": 4739584, "dir": "/var/lib/s/snapshots/12/fs" }},
              {{ "file": "/s/13/fs/ext4.fs.meta", "targetDigest": "{d2}",
                 "gzipIndex": "/s/13/fs/gzip.meta", "dir": "/s/13/fs",
                 "targetFile": "/s/13/fs/layer.tar.gz" }} ],
  "upper": {{ "index": "/s/14/writable_index", "data": "/s/14/writable_data",
             "target": "/s/14/target", "gzipIndex": "/s/14/gzip.meta", "vsize": 64 }},
  "resultFile": "/s/14/block/init-debug.log",
  "download": {{ "enable": true, "delay": 600, "delayExtra": 10, "maxMBps": 50,
                "tryCnt": 3, "blockSize": 1048576 }},
  "accelerationLayer": false,
  "recordTracePath": "" }}"#
    );
    let l = parse(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = &l.value;
    assert_eq!(
        c.repo_blob_url.as_deref(),
        Some("https://registry-1.docker.io/v2/overlaybd/redis/blobs")
    );
    assert_eq!(c.lowers.len(), 3);
    assert_eq!(
        c.lowers[0].file.as_deref(),
        Some(Path::new("/opt/overlaybd/baselayers/ext4_64"))
    );
    assert_eq!(
        (
            c.lowers[0].dir.as_ref(),
            c.lowers[0].digest.as_ref(),
            c.lowers[0].size
        ),
        (None, None, None)
    );
    assert_eq!(c.lowers[1].digest.as_deref(), Some(d1.as_str()));
    assert_eq!(c.lowers[1].size, Some(4739584));
    assert_eq!(
        c.lowers[1].dir.as_deref(),
        Some(Path::new("/var/lib/s/snapshots/12/fs"))
    );
    let t = &c.lowers[2];
    assert_eq!(t.file.as_deref(), Some(Path::new("/s/13/fs/ext4.fs.meta")));
    assert_eq!(t.target_digest.as_deref(), Some(d2.as_str()));
    assert_eq!(
        t.gzip_index.as_deref(),
        Some(Path::new("/s/13/fs/gzip.meta"))
    );
    assert_eq!(t.dir.as_deref(), Some(Path::new("/s/13/fs")));
    assert_eq!(
        t.target_file.as_deref(),
        Some(Path::new("/s/13/fs/layer.tar.gz"))
    );
    let u = c.upper.as_ref().unwrap();
    assert_eq!(u.index.as_deref(), Some(Path::new("/s/14/writable_index")));
    assert_eq!(u.data.as_deref(), Some(Path::new("/s/14/writable_data")));
    assert_eq!(u.target.as_deref(), Some(Path::new("/s/14/target")));
    assert_eq!(u.gzip_index.as_deref(), Some(Path::new("/s/14/gzip.meta")));
    assert_eq!(u.vsize, Some(64));
    assert!(c.has_upper());
    assert_eq!(
        c.result_file.as_deref(),
        Some(Path::new("/s/14/block/init-debug.log"))
    );
    assert_eq!(
        c.download,
        Some(DownloadConfig {
            enable: true,
            delay: 600,
            delay_extra: 10,
            max_mbps: 50,
            try_cnt: 3,
            block_size: 1 << 20,
        })
    );
    assert!(!c.acceleration_layer);
    assert_eq!(c.record_trace_path, None, "\"\" means off");
    assert_eq!(c.block_lowers().len(), 3);
    // The per-device download block overrides the global one.
    let g = GlobalConfig::default();
    assert_eq!(c.effective_download(&g).delay, 600);
    // Written back and parsed again: the same config.
    let again = parse(&serde_json::to_string(c).unwrap());
    assert_eq!(&again.value, c);
}

#[test]
fn partial_download_block_takes_code_defaults_and_absent_block_the_global() {
    let c = parse(r#"{"lowers":[{"file":"/a"}],"download":{"enable":true}}"#).value;
    let d = c.download.clone().unwrap();
    assert!(d.enable);
    assert_eq!(
        (d.delay, d.delay_extra, d.max_mbps, d.try_cnt, d.block_size),
        (300, 30, 100, 5, 262144)
    );
    let c = parse(r#"{"lowers":[{"file":"/a"}]}"#).value;
    let mut g = GlobalConfig::default();
    g.download.delay = 42;
    assert_eq!(c.effective_download(&g).delay, 42);
}

#[test]
fn empty_strings_and_nulls_mean_unset() {
    let c = parse(
        r#"{"repoBlobUrl":"","lowers":[{"file":"/a","dir":"","digest":null}],
            "upper":{"index":"","data":""},"resultFile":"","recordTracePath":null}"#,
    )
    .value;
    assert_eq!(c.repo_blob_url, None);
    assert_eq!(
        (c.lowers[0].dir.as_ref(), c.lowers[0].digest.as_ref()),
        (None, None)
    );
    assert!(
        !c.has_upper(),
        "an upper with neither file is a read-only device"
    );
    assert_eq!(c.result_file, None);
}

#[test]
fn upper_only_and_acceleration_layer() {
    let c = parse(r#"{"upper":{"index":"/i","data":"/d"}}"#).value;
    assert!(c.lowers.is_empty() && c.has_upper());
    let c = parse(r#"{"lowers":[{"file":"/a"},{"dir":"/accel"}],"accelerationLayer":true}"#).value;
    assert_eq!(
        c.block_lowers().len(),
        1,
        "the acceleration layer is not a block layer"
    );
}

#[test]
fn unknown_fields_are_warnings_with_paths() {
    let l = parse(
        r#"{"lowers":[{"file":"/a"},{"file":"/b","foo":1}],"bar":{"x":[1,2]},
            "upper":{"data":"/d","index":"/i","baz":true},"download":{"speed":1},
            "someFutureField":true}"#,
    );
    let mut w = l.warnings.clone();
    w.sort();
    assert_eq!(
        w,
        [
            format!("{NAME}: bar: unknown field, ignored"),
            format!("{NAME}: download.speed: unknown field, ignored"),
            format!("{NAME}: lowers[1].foo: unknown field, ignored"),
            format!("{NAME}: someFutureField: unknown field, ignored"),
            format!("{NAME}: upper.baz: unknown field, ignored"),
        ]
    );
    assert_eq!(l.value.lowers.len(), 2);
}

#[test]
fn wrong_types_name_file_and_json_path() {
    let three = r#"{"file":"/a"},{"file":"/b"}"#;
    fails(
        &format!(r#"{{"lowers":[{three},{{"file":"/c","size":"x"}}]}}"#),
        "lowers[2].size",
        r#"invalid type: string "x", expected u64"#,
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"repoBlobUrl":5,"lowers":[{"file":"/a"}]}"#,
            "repoBlobUrl",
            "invalid type",
        ),
        (r#"{"lowers":{}}"#, "lowers", "expected a sequence"),
        (r#"{"lowers":[7]}"#, "lowers[0]", "invalid type"),
        (
            r#"{"lowers":[{"file":7}]}"#,
            "lowers[0].file",
            "invalid type",
        ),
        (r#"{"lowers":[{"dir":3}]}"#, "lowers[0].dir", "invalid type"),
        (
            r#"{"lowers":[{"digest":[]}]}"#,
            "lowers[0].digest",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a","size":-1}]}"#,
            "lowers[0].size",
            "invalid value",
        ),
        (
            r#"{"lowers":[{"file":"/a","targetFile":1}]}"#,
            "lowers[0].targetFile",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a","gzipIndex":{}}]}"#,
            "lowers[0].gzipIndex",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a","targetDigest":2}]}"#,
            "lowers[0].targetDigest",
            "invalid type",
        ),
        (r#"{"upper":[]}"#, "upper", "invalid type"),
        (
            r#"{"upper":{"index":1,"data":"/d"}}"#,
            "upper.index",
            "invalid type",
        ),
        (
            r#"{"upper":{"index":"/i","data":false}}"#,
            "upper.data",
            "invalid type",
        ),
        (
            r#"{"upper":{"index":"/i","data":"/d","target":0}}"#,
            "upper.target",
            "invalid type",
        ),
        (
            r#"{"upper":{"index":"/i","data":"/d","gzipIndex":0}}"#,
            "upper.gzipIndex",
            "invalid type",
        ),
        (
            r#"{"upper":{"index":"/i","data":"/d","vsize":"big"}}"#,
            "upper.vsize",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"resultFile":true}"#,
            "resultFile",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":5}"#,
            "download",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"enable":"yes"}}"#,
            "download.enable",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"delay":-1}}"#,
            "download.delay",
            "invalid value",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"delayExtra":1.5}}"#,
            "download.delayExtra",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"maxMBps":"fast"}}"#,
            "download.maxMBps",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"tryCnt":null}}"#,
            "download.tryCnt",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"download":{"blockSize":true}}"#,
            "download.blockSize",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"accelerationLayer":"yes"}"#,
            "accelerationLayer",
            "invalid type",
        ),
        (
            r#"{"lowers":[{"file":"/a"}],"recordTracePath":1}"#,
            "recordTracePath",
            "invalid type",
        ),
        (r#"[]"#, "(top level)", "invalid type"),
        (
            r#"{"lowers":[{"file":"/a"}]} x"#,
            "(after the top-level value)",
            "trailing characters",
        ),
        (r#"{"lowers":[{"file":"/a"}"#, "lowers", "EOF"),
        ("", "(top level)", "EOF"),
    ];
    for (text, path, what) in cases {
        fails(text, path, what);
    }
}

#[test]
fn invalid_values_name_file_and_json_path() {
    let d = format!("sha256:{}", hex64('c'));
    let many: Vec<String> = (0..256).map(|i| format!(r#"{{"file":"/l{i}"}}"#)).collect();
    let cases: Vec<(String, &str, &str)> = vec![
        (format!(r#"{{"lowers":[{}]}}"#, many.join(",")), "lowers", "256 layers"),
        (r#"{"lowers":[{"file":"/a"},{}]}"#.into(), "lowers[1]", "needs \"file\", \"dir\" or \"digest\""),
        (r#"{"lowers":[{"size":5}]}"#.into(), "lowers[0]", "needs"),
        (r#"{"lowers":[{"digest":"sha256:xyz"}]}"#.into(), "lowers[0].digest", "not a digest"),
        (format!(r#"{{"lowers":[{{"digest":"{}"}}]}}"#, d.to_uppercase()), "lowers[0].digest", "not a digest"),
        (format!(r#"{{"lowers":[{{"digest":"sha512:{}"}}]}}"#, hex64('1')), "lowers[0].digest", "not a digest"),
        (r#"{"lowers":[{"file":"/a","targetDigest":"md5:00"}]}"#.into(), "lowers[0].targetDigest", "not a digest"),
        (r#"{"upper":{"index":"/i"}}"#.into(), "upper.data", "needs both"),
        (r#"{"upper":{"data":"/d"}}"#.into(), "upper.index", "needs both"),
        (r#"{"lowers":[{"file":"/a"},{"dir":"/t"}],"accelerationLayer":true,"recordTracePath":"/t"}"#.into(), "recordTracePath", "accelerationLayer"),
        (r#"{"accelerationLayer":true,"upper":{"index":"/i","data":"/d"}}"#.into(), "accelerationLayer", "no lowers"),
        (r#"{}"#.into(), "lowers", "no layers"),
        (r#"{"lowers":[],"upper":{}}"#.into(), "lowers", "no layers"),
        (r#"{"lowers":[{"dir":"/accel"}],"accelerationLayer":true}"#.into(), "lowers", "no layers"),
        (format!(r#"{{"repoBlobUrl":"ftp://h/v2/r/blobs","lowers":[{{"digest":"{d}"}}]}}"#), "repoBlobUrl", "not an http(s) URL"),
        (r#"{"lowers":[{"file":"/a"}],"download":{"blockSize":0}}"#.into(), "download.blockSize", "positive"),
        (r#"{"lowers":[{"file":"/a"}],"download":{"tryCnt":0}}"#.into(), "download.tryCnt", "at least 1"),
    ];
    for (text, path, what) in &cases {
        fails(text, path, what);
    }
    // 255 lowers are fine.
    let ok: Vec<String> = (0..255).map(|i| format!(r#"{{"file":"/l{i}"}}"#)).collect();
    parse(&format!(r#"{{"lowers":[{}]}}"#, ok.join(",")));
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.v1.json");
    std::fs::write(&p, r#"{"lowers":[{"file":"/a","x":1}],"resultFile":"/r"}"#).unwrap();
    let l = DeviceConfig::load(&p).unwrap();
    assert_eq!(
        l.lowers[0].file.as_deref(),
        Some(Path::new("/a")),
        "Loaded derefs"
    );
    assert_eq!(
        l.warnings,
        [format!(
            "{}: lowers[0].x: unknown field, ignored",
            p.display()
        )]
    );
    let missing = dir.path().join("nope.json");
    let e = DeviceConfig::load(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("nope.json"), "{e}");
    std::fs::write(
        &p,
        r#"{"lowers":[{"file":"/a","size":"x"}],"resultFile":"/r"}"#,
    )
    .unwrap();
    let e = DeviceConfig::load(&p).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: lowers[0].size: invalid type", p.display())),
        "{e}"
    );
    // The result file can still be found for reporting the failure.
    assert_eq!(result_file_hint(&p), Some(PathBuf::from("/r")));
    assert_eq!(result_file_hint(&missing), None);
    std::fs::write(&p, "{").unwrap();
    assert_eq!(result_file_hint(&p), None);
    // Regression: a relative resultFile is relative to the config's directory, whether the
    // config parses (result_path) or not (the hint), never to the daemon's working directory.
    let dir = p.parent().unwrap();
    std::fs::write(
        &p,
        r#"{"lowers": [{"file": 7}], "resultFile": "out/result"}"#,
    )
    .unwrap();
    assert_eq!(result_file_hint(&p), Some(dir.join("out/result")));
    std::fs::write(
        &p,
        r#"{"lowers": [{"file": "l"}], "resultFile": "out/result"}"#,
    )
    .unwrap();
    let c = DeviceConfig::load(&p).unwrap();
    assert_eq!(c.result_path(&p), Some(dir.join("out/result")));
}

#[test]
fn layer_files_resolves_local_layers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    std::fs::write(fs.join(".commit"), b"x").unwrap();
    let text = serde_json::json!({
        "lowers": [{"file": "/a"}, {"dir": fs}],
        "upper": {"data": "/d", "index": "/i"}
    })
    .to_string();
    let c = parse(&text).value;
    let (lowers, upper) = c.layer_files().unwrap();
    assert_eq!(lowers, [PathBuf::from("/a"), fs.join(".commit")]);
    assert_eq!(upper, Some((PathBuf::from("/d"), PathBuf::from("/i"))));
    let remote = parse(&format!(
        r#"{{"lowers":[{{"digest":"sha256:{}"}}]}}"#,
        hex64('e')
    ))
    .value;
    let e = remote.layer_files().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("lowers[0]"), "{e}");
}
