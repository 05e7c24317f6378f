//! Remote lowers read lazily from a real docker-registry on loopback (through obd-testkit):
//! the device over the remote stack must read exactly like the same stack read locally,
//! through the shared cache, across faults, auth and background download.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use obd_core::{ErrorKind, ReadAt};
use obd_image::{GlobalConfig, ImageService, RegistrySource};
use obd_testkit::{Auth, FaultProxy, Faults, RegistryOpts, RegistryServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Start a registry or print why the test is skipped.
fn registry(opts: RegistryOpts) -> Option<RegistryServer> {
    match RegistryServer::start(opts) {
        Ok(r) => Some(r),
        Err(s) => {
            eprintln!("SKIP: {}", s.0);
            None
        }
    }
}

/// A three-layer image: tar{ZFile{LSMT}} ×2 and a bare ZFile, pushed to `repo`.
struct Image {
    model: Vec<u8>,
    /// (digest, size, local blob file) bottom to top.
    blobs: Vec<(String, u64, PathBuf)>,
}

fn build_image(dir: &Path, reg: &RegistryServer, repo: &str, vsize: u64) -> Image {
    let mut model = vec![0u8; vsize as usize];
    let mut blobs = Vec::new();
    for i in 0..3u64 {
        let lsmt = committed_layer(dir, &format!("l{i}"), &mut model, 100 + i);
        let z = zfile(&lsmt, &dir.join(format!("l{i}.zfile")));
        let blob = if i < 2 {
            tar(&z, &dir.join(format!("l{i}.tar")))
        } else {
            z
        };
        let digest = reg.push_blob_file(repo, &blob);
        assert_eq!(digest, digest_of(&blob));
        let size = std::fs::metadata(&blob).unwrap().len();
        blobs.push((digest, size, blob));
    }
    Image { model, blobs }
}

/// A global config with the cache under `dir` and the given extra keys merged in.
fn global(dir: &Path, extra: serde_json::Value) -> GlobalConfig {
    let mut g = json!({
        "cacheConfig": { "cacheDir": dir.join("cache"), "cacheSizeGB": 1, "refillSize": 65536 },
        "credentialConfig": { "mode": "file", "path": dir.join("cred.json") },
        "registry": { "timeoutSecs": 10, "dockerConfig": false },
    });
    merge(&mut g, extra);
    GlobalConfig::parse(&g.to_string(), "test global")
        .unwrap()
        .value
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn service(g: GlobalConfig) -> (ImageService, Arc<RegistrySource>) {
    let (src, _warnings) = RegistrySource::from_global(&g).unwrap();
    let src = Arc::new(src);
    (ImageService::new(g).with_remote(src.clone()), src)
}

fn remote_config(dir: &Path, name: &str, url: &str, img: &Image, layer_dirs: bool) -> PathBuf {
    let lowers: Vec<_> = img
        .blobs
        .iter()
        .enumerate()
        .map(|(i, (d, s, _))| {
            let mut l = json!({ "digest": d, "size": s });
            if layer_dirs {
                let ld = dir.join(format!("{name}-layers/{i}"));
                std::fs::create_dir_all(&ld).unwrap();
                l["dir"] = json!(ld);
            }
            l
        })
        .collect();
    write_config(dir, name, &json!({ "repoBlobUrl": url, "lowers": lowers }))
}

#[test]
fn remote_stack_reads_like_local_and_cache_survives_restart() {
    let Some(reg) = registry(RegistryOpts::default()) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "test/remote", VSIZE);
    // The same stack read locally.
    let local = write_config(
        d,
        "local.json",
        &json!({ "lowers": img.blobs.iter().map(|b| json!({"file": b.2})).collect::<Vec<_>>() }),
    );
    let local_dev = ImageService::new(GlobalConfig::default())
        .open(&local)
        .unwrap();
    assert!(read_all(&local_dev) == img.model);

    let cfg = remote_config(d, "remote.json", &reg.blob_url("test/remote"), &img, false);
    let (svc, src) = service(global(d, json!({})));
    let dev = svc.open(&cfg).unwrap();
    assert_eq!(dev.size(), VSIZE);
    obd_core::testing::check_read_at(&dev, &img.model, 512, 7);
    assert!(
        read_all(&dev) == img.model,
        "remote device differs from local"
    );
    let status = svc.remote_status();
    assert_eq!(status.len(), 3, "{status:?}");
    let cache = src.cache().unwrap();
    assert_eq!(cache.list().len(), 3);
    assert!(cache.usage().used > 0);
    let m = obd_metrics::Metrics::global().encode();
    assert!(
        m.contains(&format!(
            "obd_registry_fetched_bytes_total{{layer=\"{}\"}}",
            img.blobs[0].0
        )),
        "{m}"
    );
    drop((dev, svc, src));

    // Restart with the registry gone: everything read before comes from the cache.
    drop(reg);
    let (svc, _src) = service(global(d, json!({})));
    let dev = svc.open(&cfg).unwrap();
    assert!(
        read_all(&dev) == img.model,
        "cache did not survive the restart"
    );
}

#[test]
fn faults_between_daemon_and_registry_never_give_wrong_bytes() {
    let Some(reg) = registry(RegistryOpts::default()) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "test/faults", VSIZE);
    let proxy = FaultProxy::start(&reg.url());
    let cfg = remote_config(d, "c.json", &proxy.blob_url("test/faults"), &img, false);
    let g = global(
        d,
        json!({
            "cacheConfig": { "refillSize": 16384 },
            "registry": { "timeoutSecs": 3, "retries": 4 },
        }),
    );
    let (svc, src) = service(g);
    let dev = svc.open(&cfg).unwrap();
    proxy.set_faults(Faults {
        p_5xx: 0.03,
        p_reset: 0.03,
        p_truncate: 0.03,
        p_flip: 0.03,
        seed: 7,
        only_ranges: true,
        ..Faults::default()
    });
    let mut rng = StdRng::seed_from_u64(11);
    let (mut good, mut failed) = (0u32, 0u32);
    for i in 0..2000 {
        if i % 100 == 0 {
            // Keep the registry path busy: drop the cache now and then.
            src.cache().unwrap().clear().unwrap();
        }
        let len = rng.random_range(1..=16usize) * 4096;
        let off = rng.random_range(0..(VSIZE as usize - len) / 512) * 512;
        let mut buf = vec![0u8; len];
        match dev.read_exact_at(&mut buf, off as u64) {
            Ok(()) => {
                assert!(
                    buf == img.model[off..off + len],
                    "WRONG BYTES at {off}+{len} (read {i})"
                );
                good += 1;
            }
            Err(e) => {
                assert_eq!(e.errno(), ErrorKind::Io.errno(), "{e}");
                failed += 1;
            }
        }
    }
    let stats = proxy.stats();
    eprintln!("fault run: {good} good reads, {failed} errors; proxy {stats:?}");
    assert!(good > 1500, "too few successful reads: {good}");

    // A stalled registry ends in an error within the time limit, never a hang.
    src.cache().unwrap().clear().unwrap();
    proxy.set_faults(Faults {
        p_stall: 1.0,
        stall: Duration::from_secs(60),
        only_ranges: true,
        ..Faults::default()
    });
    let t0 = Instant::now();
    let e = dev.read_vec(0, VSIZE as usize).unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(e.errno(), ErrorKind::Io.errno(), "{e}");
    proxy.set_faults(Faults::default());
    assert!(read_all(&dev) == img.model);
}

#[test]
fn corrupt_truncated_and_deleted_cache_files_heal_while_reading() {
    let Some(reg) = registry(RegistryOpts::default()) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "test/heal", VSIZE);
    let cfg = remote_config(d, "c.json", &reg.blob_url("test/heal"), &img, false);
    let (svc, _src) = service(global(d, json!({})));
    let dev = Arc::new(svc.open(&cfg).unwrap());
    assert!(read_all(&*dev) == img.model);
    let cache_dir = d.join("cache");
    let files = || -> Vec<PathBuf> {
        walk(&cache_dir)
            .into_iter()
            .filter(|p| {
                std::fs::metadata(p)
                    .map(|m| m.len() > 4096)
                    .unwrap_or(false)
            })
            .collect()
    };
    let mut rng = StdRng::seed_from_u64(3);
    for round in 0..6 {
        for f in files() {
            match round % 3 {
                0 => {
                    // Flip bytes in place.
                    let mut bytes = std::fs::read(&f).unwrap();
                    for _ in 0..64 {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] ^= 0x5a;
                    }
                    std::fs::write(&f, bytes).unwrap();
                }
                1 => {
                    let f2 = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                    let len = f2.metadata().unwrap().len();
                    f2.set_len(len / 3).unwrap();
                }
                _ => {
                    let _ = std::fs::remove_file(&f);
                }
            }
        }
        assert!(
            read_all(&*dev) == img.model,
            "wrong bytes after damaging the cache (round {round})"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn background_download_verifies_switches_and_refuses_wrong_bytes() {
    let Some(reg) = registry(RegistryOpts::default()) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "test/download", VSIZE);
    let proxy = FaultProxy::start(&reg.url());
    let cfg = remote_config(d, "c.json", &proxy.blob_url("test/download"), &img, true);
    let g = global(
        d,
        json!({ "download": { "enable": true, "delay": 1, "delayExtra": 0, "maxMBps": 50,
                              "tryCnt": 20, "blockSize": 65536 } }),
    );
    let (svc, _src) = service(g);
    let dev = svc.open(&cfg).unwrap();
    // Every range answer now has a flipped byte: downloads must be refused.
    proxy.set_faults(Faults {
        p_flip: 1.0,
        only_ranges: true,
        ..Faults::default()
    });
    let t0 = Instant::now();
    loop {
        let st = svc.remote_status();
        if st.iter().any(|s| {
            s.download_error
                .as_deref()
                .is_some_and(|e| e.contains("refused"))
        }) {
            assert!(st.iter().all(|s| s.local_file.is_none()), "{st:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no refusal: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.set_faults(Faults::default());
    let t0 = Instant::now();
    loop {
        let st = svc.remote_status();
        if st.iter().all(|s| s.download == "done") {
            assert_eq!(st.len(), img.blobs.len());
            for (digest, size, _) in &img.blobs {
                let s = st.iter().find(|s| &s.digest == digest).unwrap();
                assert_eq!(s.downloaded_bytes, *size);
                let f = s.local_file.as_ref().unwrap();
                assert_eq!(&digest_of(f), digest);
            }
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "not done: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Switched: reads work with the registry gone.
    drop(proxy);
    drop(reg);
    assert!(read_all(&dev) == img.model);
    // A new service finds the downloaded files in the layer dirs.
    drop((dev, svc));
    let (svc2, _) = service(global(d, json!({})));
    let dev2 = svc2.open(&cfg).unwrap();
    assert!(read_all(&dev2) == img.model);
    assert!(svc2.remote_status().is_empty(), "all lowers are local now");
}

#[test]
fn basic_auth_from_the_credential_file_and_clear_errors() {
    let Some(reg) = registry(RegistryOpts {
        auth: Auth::Basic {
            user: "alice".into(),
            pass: "s3cret-Pa55".into(),
        },
        ..RegistryOpts::default()
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "team/app", VSIZE);
    let cfg = remote_config(d, "c.json", &reg.blob_url("team/app"), &img, false);
    let cred = |user: &str, pass: &str| {
        let v = json!({ "auths": { reg.host(): { "username": user, "password": pass } } });
        std::fs::write(d.join("cred.json"), v.to_string()).unwrap();
    };
    // Wrong password: a clear error naming the registry, never the password.
    cred("alice", "wrong-Pa55word");
    let (svc, _) = service(global(d, json!({})));
    let e = svc.open(&cfg).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{msg}");
    assert!(msg.contains(&reg.host()), "{msg}");
    assert!(
        !msg.contains("wrong-Pa55word") && !msg.contains("s3cret"),
        "{msg}"
    );
    // Rotated to the right password: works without a restart.
    std::thread::sleep(Duration::from_millis(1100));
    cred("alice", "s3cret-Pa55");
    let dev = svc.open(&cfg).unwrap();
    assert!(read_all(&dev) == img.model);
}

#[test]
fn bearer_tokens_that_expire_mid_read_are_refreshed() {
    let Some(reg) = registry(RegistryOpts {
        auth: Auth::Token {
            user: "bob".into(),
            pass: "t0ken-Pa55".into(),
            token_ttl: Duration::from_secs(2),
        },
        ..RegistryOpts::default()
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "team/tok", VSIZE);
    let cfg = remote_config(d, "c.json", &reg.blob_url("team/tok"), &img, false);
    let v = json!({ "auths": { reg.host(): { "username": "bob", "password": "t0ken-Pa55" } } });
    std::fs::write(d.join("cred.json"), v.to_string()).unwrap();
    let (svc, src) = service(global(d, json!({ "cacheConfig": { "refillSize": 4096 } })));
    let dev = svc.open(&cfg).unwrap();
    let before = reg.token_requests();
    let t0 = Instant::now();
    let mut off = 0u64;
    while t0.elapsed() < Duration::from_secs(5) {
        src.cache().unwrap().clear().unwrap();
        let mut buf = vec![0u8; 4096];
        dev.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == img.model[off as usize..off as usize + 4096]);
        off = (off + 4096 * 17) % (VSIZE - 4096);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        reg.token_requests() > before,
        "tokens were not refreshed after expiry"
    );
}

#[test]
fn tls_registry_needs_its_ca_or_an_explicit_insecure() {
    let Some(reg) = registry(RegistryOpts {
        tls: true,
        ..RegistryOpts::default()
    }) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "tls/app", VSIZE);
    let cfg = remote_config(d, "c.json", &reg.blob_url("tls/app"), &img, false);
    {
        let (svc, _) = service(global(d, json!({})));
        let msg = svc.open(&cfg).unwrap_err().to_string();
        assert!(
            msg.to_lowercase().contains("certificate") || msg.to_lowercase().contains("tls"),
            "{msg}"
        );
    }
    let ca = reg.ca_pem().unwrap();
    {
        let (svc, _) = service(global(
            d,
            json!({ "registry": { "hosts": { reg.host(): { "caFile": ca } } } }),
        ));
        assert!(read_all(&svc.open(&cfg).unwrap()) == img.model);
    }
    // A fresh cache, so the bytes really come over TLS again.
    let _ = std::fs::remove_dir_all(d.join("cache"));
    let (svc, _) = service(global(
        d,
        json!({ "registry": { "hosts": { reg.host(): { "insecure": true } } } }),
    ));
    assert!(read_all(&svc.open(&cfg).unwrap()) == img.model);
}

#[test]
fn trace_recorded_on_one_attach_prefetches_the_next() {
    let Some(reg) = registry(RegistryOpts::default()) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = build_image(d, &reg, "test/trace", VSIZE);
    let trace = d.join("app.trace");
    std::fs::write(&trace, b"").unwrap();
    let lowers: Vec<_> = img
        .blobs
        .iter()
        .map(|(dg, s, _)| json!({ "digest": dg, "size": s }))
        .collect();
    let cfg = write_config(
        d,
        "c.json",
        &json!({ "repoBlobUrl": reg.blob_url("test/trace"), "lowers": lowers,
                 "recordTracePath": trace }),
    );
    // The "start-up" reads of the application.
    let ranges = [(0u64, 65536usize), (1 << 20, 8192), (3 << 20, 131072)];
    {
        let (svc, _) = service(global(d, json!({})));
        let dev = svc.open(&cfg).unwrap();
        assert!(dev.is_recording());
        for &(off, len) in &ranges {
            let got = dev.read_vec(off, len).unwrap();
            assert!(got == img.model[off as usize..off as usize + len]);
        }
    }
    assert!(
        d.join("app.trace.ok").exists(),
        "trace not finished on close"
    );
    let records = obd_image::prefetch::decode(&std::fs::read(&trace).unwrap()).unwrap();
    assert!(!records.is_empty());

    // Next attach with an empty cache: the trace is replayed in the background.
    std::fs::remove_dir_all(d.join("cache")).unwrap();
    let (svc, src) = service(global(d, json!({})));
    let dev = svc.open(&cfg).unwrap();
    assert!(!dev.is_recording());
    let t0 = Instant::now();
    loop {
        let p = dev.prefetch_progress().expect("replay runs");
        if p.finished {
            assert!(p.bytes > 0 && p.reads_failed == 0, "{p:?}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(src.cache().unwrap().usage().used > 0);
    // The registry is gone: the traced ranges are served from the prefetched cache.
    drop(reg);
    for &(off, len) in &ranges {
        let got = dev.read_vec(off, len).unwrap();
        assert!(got == img.model[off as usize..off as usize + len]);
    }
}
