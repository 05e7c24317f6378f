//! Devices opened from configs over real layers: every representation, lookup order,
//! read-only refusal, and errors that name config, lower, file and offset.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use obd_core::testing::{check_concurrent_reads, check_read_at};
use obd_core::{BlockDevice, ErrorKind, FileDevice, ReadAt};
use obd_image::{GlobalConfig, ImageService, RemoteBlob, RemoteSource, write_result};
use serde_json::json;

fn service() -> ImageService {
    ImageService::new(GlobalConfig::default())
}

#[test]
fn every_layer_representation_reads_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    // Bottom to top: plain committed, ZFile, tar{ZFile}, tar{plain}, sealed.
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let l1 = zfile(
        &committed_layer(d, "l1", &mut model, 2),
        &d.join("l1.zfile"),
    );
    let l2z = zfile(
        &committed_layer(d, "l2", &mut model, 3),
        &d.join("l2.zfile"),
    );
    let l2 = tar(&l2z, &d.join("l2.tar"));
    let l3 = tar(&committed_layer(d, "l3", &mut model, 4), &d.join("l3.tar"));
    let l4 = sealed_layer(d, "l4", &mut model, 5);
    let cfg = write_config(
        d,
        "config.v1.json",
        &json!({"lowers": [{"file": l0}, {"file": l1}, {"file": l2}, {"file": l3}, {"file": l4}],
                "resultFile": d.join("result")}),
    );
    let dev = service().open(&cfg).unwrap();
    let info = dev.info();
    assert_eq!(info.config_path, cfg);
    assert_eq!((info.size, info.read_only, info.lowers), (VSIZE, true, 5));
    assert_eq!(info.upper, None);
    assert_eq!(
        info.result_file.as_deref(),
        Some(d.join("result").as_path())
    );
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert!(read_all(&dev) == model);
    check_read_at(&dev, &model, 512, 7);
    check_read_at(&dev, &model, 1, 8);
    check_concurrent_reads(&dev, &model, 512);
}

#[test]
fn upstream_fixture_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let f = |p: &str| fixture(&format!("b_commit/{p}"));
    // Upstream's ZFile commit of layer 1 (tar-wrapped here) under its plain commit of layer 2.
    let l1tar = tar(&f("layers/l1.lz4.bs4k.zfile"), &dir.path().join("l1.tar"));
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"lowers": [{"file": l1tar}, {"file": f("layers/l2.lsmt")}]}),
    );
    let dev = service().open(&cfg).unwrap();
    assert_eq!(
        sha256(&read_all(&dev)),
        expected("b_commit", "device_after_layer2")
    );
    // Upstream's sealed file in a layer dir, as overlaybd.sealed.
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    std::fs::copy(
        fixture("a_create/sealed/small64m.sealed"),
        fs.join("overlaybd.sealed"),
    )
    .unwrap();
    let cfg = write_config(dir.path(), "s.json", &json!({"lowers": [{"dir": fs}]}));
    let dev = service().open(&cfg).unwrap();
    assert_eq!(
        sha256(&read_all(&dev)),
        expected("a_create", "small64m.sealed")
    );
    // Upstream's 64 GiB empty ext4 base layer: the superblock magic is where ext4 puts it.
    let cfg = write_config(
        dir.path(),
        "e.json",
        &json!({"lowers": [{"file": fixture("e_real/ext4_64")}]}),
    );
    let dev = service().open(&cfg).unwrap();
    assert_eq!(dev.size(), 64 << 30);
    assert_eq!(dev.read_vec(1024 + 56, 2).unwrap(), [0x53, 0xEF]);
}

#[test]
fn dir_lookup_order_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fs = d.join("snap/fs");
    std::fs::create_dir_all(&fs).unwrap();
    let mut models = Vec::new();
    for (i, name) in ["overlaybd.commit", ".commit", "overlaybd.sealed"]
        .iter()
        .enumerate()
    {
        let mut m = vec![0u8; VSIZE as usize];
        let f = committed_layer(d, &format!("c{i}"), &mut m, 10 + i as u64);
        std::fs::rename(f, fs.join(name)).unwrap();
        models.push(m);
    }
    // Relative to the config's directory.
    let cfg = write_config(d, "c.json", &json!({"lowers": [{"dir": "snap/fs"}]}));
    for (i, name) in ["overlaybd.commit", ".commit", "overlaybd.sealed"]
        .iter()
        .enumerate()
    {
        let dev = service().open(&cfg).unwrap();
        assert!(read_all(&dev) == models[i], "{name} must be found first");
        std::fs::remove_file(fs.join(name)).unwrap();
    }
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let msg = e.to_string();
    assert!(
        msg.contains("c.json") && msg.contains("lowers[0]") && msg.contains("snap/fs"),
        "{msg}"
    );
    // `file` wins over `dir`.
    let mut m = vec![0u8; VSIZE as usize];
    committed_layer(d, "direct", &mut m, 20);
    let cfg = write_config(
        d,
        "f.json",
        &json!({"lowers": [{"file": "direct.lsmt", "dir": "snap/fs"}]}),
    );
    assert!(read_all(&service().open(&cfg).unwrap()) == m);
}

#[test]
fn read_only_device_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(dir.path(), "l0", &mut model, 1);
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"lowers": [{"file": l0}],
        "upper": {"index": "", "data": ""}}),
    );
    let dev = service().open(&cfg).unwrap();
    assert!(dev.is_read_only() && dev.info().read_only && dev.upper().is_none());
    let e = dev.write_at(&[1u8; 512], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert!(e.to_string().contains("c.json"), "{e}");
    assert_eq!(dev.discard(0, 512).unwrap_err().kind(), ErrorKind::ReadOnly);
    dev.flush().unwrap();
    assert!(read_all(&dev) == model, "nothing changed");
}

#[test]
fn missing_and_corrupt_layers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let missing = d.join("gone.lsmt");
    let cfg = write_config(
        d,
        "c.json",
        &json!({"lowers": [{"file": l0}, {"file": missing}]}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: lowers[1]: ", cfg.display())) && msg.contains("gone.lsmt"),
        "{msg}"
    );

    // A corrupt trailer: the error names config, lower, layer file and offset.
    let bad = d.join("bad.lsmt");
    let mut bytes = std::fs::read(committed_layer(d, "b", &mut model.clone(), 2)).unwrap();
    let n = bytes.len();
    bytes[n - 4096] ^= 0xFF;
    std::fs::write(&bad, &bytes).unwrap();
    let cfg = write_config(
        d,
        "c2.json",
        &json!({"lowers": [{"file": l0}, {"file": l0}, {"file": bad}]}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: lowers[2]: {}: at offset {}",
            cfg.display(),
            bad.display(),
            n - 4096
        )),
        "{msg}"
    );

    // A corrupt ZFile block is found when it is read, and named.
    let z = zfile(&l0, &d.join("l0.zfile"));
    let mut zb = std::fs::read(&z).unwrap();
    zb[5000] ^= 0x55;
    std::fs::write(&z, &zb).unwrap();
    let cfg = write_config(d, "c3.json", &json!({"lowers": [{"file": z}]}));
    let dev = service().open(&cfg).unwrap();
    let e = dev.read_vec(0, VSIZE as usize).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("l0.zfile") && msg.contains("offset"), "{msg}");

    // Not a layer at all.
    let junk = d.join("junk");
    std::fs::write(&junk, vec![7u8; 10000]).unwrap();
    let cfg = write_config(d, "c4.json", &json!({"lowers": [{"file": junk}]}));
    let msg = service().open(&cfg).unwrap_err().to_string();
    assert!(msg.contains("lowers[0]") && msg.contains("junk"), "{msg}");

    // An invalid config is an error naming it; the result file reports it.
    let cfg = write_config(
        d,
        "c5.json",
        &json!({"lowers": [{"file": l0, "size": "x"}],
        "resultFile": d.join("r5")}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert!(e.to_string().contains("lowers[0].size"), "{e}");
    let rf = obd_image::config::device::result_file_hint(&cfg).unwrap();
    write_result(&rf, Err(&e)).unwrap();
    let text = std::fs::read_to_string(&rf).unwrap();
    assert!(
        text.starts_with("failed:") && text.contains("lowers[0].size"),
        "{text}"
    );
    write_result(&rf, Ok(())).unwrap();
    assert_eq!(std::fs::read_to_string(&rf).unwrap(), "success");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary result files left behind");
}

#[test]
fn turbo_oci_is_unsupported_and_acceleration_layer_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let cfg = write_config(
        d,
        "t.json",
        &json!({"lowers": [{"file": l0, "targetFile": "/x.tar.gz"}]}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string().contains("lowers[0]") && e.to_string().contains("TurboOCI"),
        "{e}"
    );
    let (ud, ui) = create_upper(d, "u", VSIZE, false);
    let cfg = write_config(
        d,
        "t2.json",
        &json!({"lowers": [{"file": l0}],
        "upper": {"data": ud, "index": ui, "target": "/t.tar"}}),
    );
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("upper"), "{e}");

    // The acceleration layer is an OCI tar with a trace file, not an LSMT layer.
    let accel = d.join("accel");
    std::fs::create_dir(&accel).unwrap();
    std::fs::write(accel.join("overlaybd.commit"), b"not lsmt").unwrap();
    let cfg = write_config(
        d,
        "a.json",
        &json!({"lowers": [{"file": l0}, {"dir": accel}],
        "accelerationLayer": true}),
    );
    let dev = service().open(&cfg).unwrap();
    assert_eq!(dev.info().lowers, 1);
    assert!(read_all(&dev) == model);
    assert!(
        dev.info()
            .warnings
            .iter()
            .any(|w| w.contains("acceleration")),
        "{:?}",
        dev.info().warnings
    );
    // recordTracePath is accepted and reported as ignored; unknown fields are warnings.
    let cfg = write_config(
        d,
        "r.json",
        &json!({"lowers": [{"file": l0}],
        "recordTracePath": d.join("trace"), "newThing": 1}),
    );
    let w = service().open(&cfg).unwrap().info().warnings.clone();
    assert!(w.iter().any(|w| w.contains("recordTracePath")), "{w:?}");
    assert!(
        w.iter().any(|w| w.contains("newThing: unknown field")),
        "{w:?}"
    );
}

/// Serves blobs from a directory, named by the digest's hex, counting requests.
struct DirRemote {
    dir: std::path::PathBuf,
    calls: AtomicUsize,
}

impl RemoteSource for DirRemote {
    fn open_blob(&self, req: &RemoteBlob<'_>) -> obd_core::Result<Arc<dyn ReadAt>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            req.repo_blob_url,
            "https://registry.example/v2/lib/img/blobs"
        );
        assert_eq!(req.url(), format!("{}/{}", req.repo_blob_url, req.digest));
        let hex = req.digest.strip_prefix("sha256:").unwrap();
        let dev = FileDevice::open(self.dir.join(hex))?;
        // Hide the path: a remote blob has none.
        Ok(Arc::new(NoPath(dev)))
    }
}

struct NoPath(FileDevice);
impl ReadAt for NoPath {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> obd_core::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

#[test]
fn remote_lowers_go_through_the_remote_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let blobs = d.join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    let mut model = vec![0u8; VSIZE as usize];
    let l0 = committed_layer(d, "l0", &mut model, 1);
    let l1 = tar(
        &zfile(
            &committed_layer(d, "l1", &mut model, 2),
            &d.join("l1.zfile"),
        ),
        &d.join("l1.tar"),
    );
    let digest = digest_of(&l1);
    let size = std::fs::metadata(&l1).unwrap().len();
    std::fs::rename(&l1, blobs.join(digest.strip_prefix("sha256:").unwrap())).unwrap();
    let layer_dir = d.join("snapshots/2/fs");
    std::fs::create_dir_all(&layer_dir).unwrap();
    let lowers = json!([{"file": l0}, {"digest": digest, "size": size, "dir": layer_dir}]);

    // No repoBlobUrl.
    let cfg = write_config(d, "a.json", &json!({"lowers": lowers}));
    let msg = service().open(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("lowers[1]") && msg.contains(&digest) && msg.contains("repoBlobUrl"),
        "{msg}"
    );
    // No remote source.
    let url = "https://registry.example/v2/lib/img/blobs";
    let cfg = write_config(d, "b.json", &json!({"repoBlobUrl": url, "lowers": lowers}));
    let e = service().open(&cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: lowers[1]: ", cfg.display()))
            && msg.contains(&digest)
            && msg.contains("no remote source"),
        "{msg}"
    );
    // With a remote source: tar{ZFile{LSMT}} from "the registry" reads like the model.
    let remote = Arc::new(DirRemote {
        dir: blobs.clone(),
        calls: AtomicUsize::new(0),
    });
    let svc = service().with_remote(remote.clone());
    let dev = svc.open(&cfg).unwrap();
    assert!(read_all(&dev) == model);
    check_read_at(&dev, &model, 512, 3);
    let dev2 = svc.open(&cfg).unwrap();
    assert_eq!(
        remote.calls.load(Ordering::Relaxed),
        1,
        "the blob is shared, fetched once"
    );
    drop((dev, dev2));
    // A wrong declared size is caught.
    let bad = json!([{"file": l0}, {"digest": digest, "size": size + 1}]);
    let cfg = write_config(d, "c.json", &json!({"repoBlobUrl": url, "lowers": bad}));
    let msg = svc.open(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("lowers[1]") && msg.contains("config says"),
        "{msg}"
    );
    // A blob downloaded into the layer dir is used instead of the registry.
    std::fs::copy(
        blobs.join(digest.strip_prefix("sha256:").unwrap()),
        layer_dir.join("overlaybd.commit"),
    )
    .unwrap();
    let dev = service().open(&d.join("b.json")).unwrap();
    assert!(read_all(&dev) == model);
}
