//! End to end with a real registry: build an ext4 image with our own tools (mkfs'd base +
//! a committed tree layer, ZFile + tar), push it to docker-registry, attach it LAZILY through
//! the daemon as a FUSE file, loop-mount it and compare the tree; then the cache and status
//! commands and the Prometheus endpoint, with the cache cleared while a file is being read.

mod svc;

use std::fs;
use std::path::Path;
use std::process::Command;

use obd_testkit::{PushedLayer, RegistryOpts, RegistryServer};
use serde_json::json;
use svc::*;

const MIB: u64 = 1 << 20;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `overlaybd-commit -z -t DATA INDEX OUT`.
fn commit_zt(data: &Path, index: &Path, out: &Path) {
    let res = Command::new(env!("CARGO_BIN_EXE_overlaybd-commit"))
        .args(["-z", "-t"])
        .arg(data)
        .arg(index)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(fs::read(p).unwrap()))
}

#[test]
fn remote_image_attached_lazily_over_fuse() {
    if skip(
        "remote_image_attached_lazily_over_fuse",
        kernel_skip_reason(),
    ) {
        return;
    }
    let reg = match RegistryServer::start(RegistryOpts::default()) {
        Ok(r) => r,
        Err(s) => {
            eprintln!("SKIP: remote_image_attached_lazily_over_fuse: {}", s.0);
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let vsize = 256 * MIB;
    let RwStack {
        base,
        up_data,
        up_index,
        rw_cfg,
        src,
    } = rw_stack(p, vsize);

    // Fill the upper through the kernel, then commit it as a registry blob (ZFile in tar).
    let mut d = Daemon::new(p);
    d.start();
    let disk = p.join("disk.img");
    d.attach(&rw_cfg, "--fuse", &disk);
    let lo = losetup(&disk, false);
    let mnt = p.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    sh("mount", &[&lo, mnt.to_str().unwrap()]);
    sh(
        "cp",
        &["-a", &format!("{}/.", src.display()), mnt.to_str().unwrap()],
    );
    sh("umount", &[mnt.to_str().unwrap()]);
    sh("losetup", &["-d", &lo]);
    assert!(d.obd("detach").arg(&disk).status().unwrap().success());
    assert!(d.terminate());
    let layer1 = p.join("layer1.tar");
    commit_zt(&up_data, &up_index, &layer1);

    // Push both layers; the config names them by digest only.
    let repo = "test/fs";
    let mut lowers = Vec::new();
    let mut pushed = Vec::new();
    let mut total = 0;
    for blob in [&base, &layer1] {
        let digest = reg.push_blob_file(repo, blob);
        assert_eq!(digest, format!("sha256:{}", sha256_file(blob)));
        let size = fs::metadata(blob).unwrap().len();
        total += size;
        lowers.push(json!({ "digest": digest, "size": size }));
        pushed.push(
            PushedLayer::new(
                digest.clone(),
                size,
                "application/vnd.oci.image.layer.v1.tar",
            )
            .with_annotation("containerd.io/snapshot/overlaybd/blob-digest", &digest)
            .with_annotation(
                "containerd.io/snapshot/overlaybd/blob-size",
                size.to_string(),
            )
            .with_annotation("containerd.io/snapshot/overlaybd/version", "0.1.0"),
        );
    }
    // An image manifest, as the snapshotter would find it.
    let diff_ids: Vec<_> = pushed.iter().map(|l| l.digest.clone()).collect();
    let image_config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let manifest = reg.push_image(repo, "latest", &pushed, image_config.to_string().as_bytes());
    assert!(manifest.starts_with("sha256:"));
    let cfg = p.join("remote.json");
    fs::write(
        &cfg,
        json!({ "repoBlobUrl": reg.blob_url(repo), "lowers": lowers,
                "resultFile": p.join("remote.result") })
        .to_string(),
    )
    .unwrap();

    // A daemon with a cache dir and the metrics endpoint.
    let port = free_port();
    let mut g: serde_json::Value = serde_json::from_slice(&fs::read(&d.config).unwrap()).unwrap();
    g["cacheConfig"] = json!({ "cacheDir": p.join("cache"), "cacheSizeGB": 1 });
    g["exporterConfig"] = json!({ "enable": true, "port": port, "uriPrefix": "/metrics" });
    g["registry"] = json!({ "timeoutSecs": 20, "dockerConfig": false });
    g["credentialConfig"] = json!({ "mode": "file", "path": p.join("cred.json") });
    fs::write(&d.config, g.to_string()).unwrap();
    d.start();
    let ro = p.join("remote.img");
    d.attach(&cfg, "--fuse", &ro);
    assert_eq!(
        fs::read_to_string(p.join("remote.result")).unwrap().trim(),
        "success"
    );
    let lo = losetup(&ro, true);
    sh("mount", &["-o", "ro", &lo, mnt.to_str().unwrap()]);
    assert_same_tree(&src, &mnt);

    // Status: both layers remote, partly cached.
    let out = d.obd("status").output().unwrap();
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = st["remoteLayers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{st}");
    let cached: u64 = layers
        .iter()
        .map(|l| l["cachedBytes"].as_u64().unwrap())
        .sum();
    assert!(cached > 0 && cached <= total, "{st}");

    // The cache commands go through the daemon.
    let out = d.obd("cache").args(["ls", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls["entries"].as_array().unwrap().len(), 2, "{ls}");

    // Clear the cache while a large file is read: the bytes stay right.
    sh("sh", &["-c", "echo 3 > /proc/sys/vm/drop_caches"]);
    let large = mnt.join("large.bin");
    let want = sha256_file(&src.join("large.bin"));
    let reader = std::thread::spawn(move || sha256_file(&large));
    let out = d.obd("cache").arg("clear").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reader.join().unwrap(),
        want,
        "wrong bytes while clearing the cache"
    );

    // Prometheus endpoint.
    let body = String::from_utf8(sh_out(
        "curl",
        &["-sf", &format!("http://127.0.0.1:{port}/metrics")],
    ))
    .unwrap();
    for want in [
        "obd_alive 1",
        "obd_registry_fetched_bytes_total{layer=\"sha256:",
        "obd_cache_hits_total",
        "obd_read_seconds_count{source=\"registry\"}",
    ] {
        assert!(body.contains(want), "metrics lack {want}:\n{body}");
    }

    sh("umount", &[mnt.to_str().unwrap()]);
    sh("losetup", &["-d", &lo]);
    assert!(d.obd("detach").arg(&ro).status().unwrap().success());
    assert!(d.terminate());
    // Offline: the cache dir is listed without a daemon.
    let out = d.obd("cache").args(["ls", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounts_under(p).is_empty());
    assert!(loops_under(p).is_empty());
}

/// stdout of a command that must succeed.
fn sh_out(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
