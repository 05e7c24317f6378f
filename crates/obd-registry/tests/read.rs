//! Range reads against a real docker-registry: content, size probe, conformance suites,
//! big split reads, reads from inside other runtimes, NotFound, TLS, redirects, P2P.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Forwarder, dead_addr, opts, random_bytes};
use obd_core::{ErrorKind, ReadAt};
use obd_registry::{
    CredentialProvider, HostOptions, HttpCredentials, HttpMode, Registry, RegistryOptions,
};
use obd_testkit::{Auth, FaultProxy, RegistryOpts, RegistryServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn plain() -> Result<RegistryServer, obd_testkit::Skip> {
    RegistryServer::start(RegistryOpts::default())
}

fn check_random_reads(f: &dyn ReadAt, data: &[u8], n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..n {
        let off = rng.random_range(0..data.len());
        let len = rng.random_range(1..=(data.len() - off).min(300_000));
        let got = f.read_vec(off as u64, len).unwrap();
        assert!(got == data[off..off + len], "bytes differ at {off}+{len}");
    }
}

#[test]
fn anonymous_reads_probe_and_conformance() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(8 << 20, 1);
    let digest = reg.push_blob("test/read", &data);
    let r = Registry::new(opts()).unwrap();
    // Size probe at open.
    let f = r
        .open_blob(&reg.blob_url("test/read"), &digest, None)
        .unwrap();
    assert_eq!(f.size(), data.len() as u64);
    assert_eq!(f.digest(), digest);
    assert_eq!(f.url(), format!("{}/{digest}", reg.blob_url("test/read")));
    check_random_reads(&*f, &data, 100, 7);
    // The whole blob plus one byte more than 8 MiB would be: split into pieces.
    let all = f.read_vec(0, data.len()).unwrap();
    assert!(all == data);
    obd_core::testing::check_read_at(&*f, &data, 512, 3);
    obd_core::testing::check_concurrent_reads(&*f, &data, 4096);
    // Size given: no probe, same bytes.
    let g = r
        .open_blob(&reg.blob_url("test/read"), &digest, Some(data.len() as u64))
        .unwrap();
    check_random_reads(&*g, &data, 20, 8);
    let m = obd_metrics::Metrics::global().encode();
    assert!(
        m.contains(&format!(
            "obd_registry_requests_total{{layer=\"{digest}\"}}"
        )),
        "{m}"
    );
    assert!(m.contains(&format!(
        "obd_registry_fetched_bytes_total{{layer=\"{digest}\"}}"
    )));
    assert!(m.contains("obd_read_seconds_count{source=\"registry\"}"));
}

#[test]
fn big_reads_split_and_tiny_blobs() {
    let reg = skip_on_err!(plain());
    let data = random_bytes((20 << 20) + 12345, 2);
    let digest = reg.push_blob("test/big", &data);
    let r = Registry::new(opts()).unwrap();
    let f = r
        .open_blob(&reg.blob_url("test/big"), &digest, None)
        .unwrap();
    let got = f.read_vec(1, data.len() - 1).unwrap();
    assert!(got == data[1..]);
    // A one-byte blob and an empty blob.
    let one = reg.push_blob("test/big", b"x");
    let f = r.open_blob(&reg.blob_url("test/big"), &one, None).unwrap();
    assert_eq!(f.size(), 1);
    assert_eq!(f.read_vec(0, 1).unwrap(), b"x");
    let empty = reg.push_blob("test/big", b"");
    let f = r
        .open_blob(&reg.blob_url("test/big"), &empty, None)
        .unwrap();
    assert_eq!(f.size(), 0);
    assert_eq!(f.read_vec(0, 0).unwrap(), b"");
}

#[test]
fn reads_from_inside_other_runtimes() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(1 << 20, 3);
    let digest = reg.push_blob("test/rt", &data);
    let r = Registry::new(opts()).unwrap();
    let f = r
        .open_blob(&reg.blob_url("test/rt"), &digest, None)
        .unwrap();
    let outer = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (f2, d2, r2, url) = (f.clone(), data.clone(), r.clone(), reg.blob_url("test/rt"));
    outer.block_on(async move {
        // On a worker thread (no block_on inside: must not panic).
        assert!(f2.read_vec(100, 5000).unwrap() == d2[100..5100]);
        // From spawn_blocking, several at once.
        let mut hs = Vec::new();
        for i in 0..8u64 {
            let (f3, d3) = (f2.clone(), d2.clone());
            hs.push(tokio::task::spawn_blocking(move || {
                let off = (i * 70_001) as usize;
                assert!(f3.read_vec(off as u64, 65_536).unwrap() == d3[off..off + 65_536]);
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        // Opening (with a probe) inside a runtime works too; dropping the last Registry
        // handle inside a runtime must not panic.
        let g = r2.open_blob(&url, &digest, None).unwrap();
        assert_eq!(g.size(), d2.len() as u64);
        drop(g);
        drop(r2);
        drop(f2);
    });
    drop(r);
    outer.block_on(async move { drop(f) });
}

#[test]
fn missing_blob_is_not_found_and_dead_registry_fails_fast() {
    let reg = skip_on_err!(plain());
    let r = Registry::new(opts()).unwrap();
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let e = r
        .open_blob(&reg.blob_url("test/none"), digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains(digest) && e.to_string().contains("404"),
        "{e}"
    );
    let f = r
        .open_blob(&reg.blob_url("test/none"), digest, Some(100))
        .unwrap();
    let e = f.read_vec(0, 10).unwrap_err();
    eprintln!("error: {e}");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e.errno(), libc_enoent());
    // Nobody listening: connection refused is retried, then reported (no hang).
    let r = Registry::new(RegistryOptions {
        timeout: Duration::from_secs(3),
        ..Default::default()
    })
    .unwrap();
    let t = std::time::Instant::now();
    let e = r
        .open_blob(&format!("http://{}/v2/x/blobs", dead_addr()), digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(e.to_string().contains("connection failed"), "{e}");
}

fn libc_enoent() -> i32 {
    2
}

#[test]
fn tls_verified_with_ca_refused_without_and_insecure_per_host() {
    let reg = skip_on_err!(RegistryServer::start(RegistryOpts {
        auth: Auth::None,
        tls: true,
        storage: None,
    }));
    let data = random_bytes(300_000, 4);
    let digest = reg.push_blob("test/tls", &data);
    let url = reg.blob_url("test/tls");
    assert!(url.starts_with("https://"));
    // With the CA for this host.
    let mut o = opts();
    o.hosts.insert(
        reg.host(),
        HostOptions {
            insecure: false,
            ca_file: reg.ca_pem(),
        },
    );
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap();
    check_random_reads(&*f, &data, 10, 1);
    // Without: a clear, immediate TLS error (not retried into a timeout).
    let t = std::time::Instant::now();
    let e = Registry::new(opts())
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains("TLS") && msg.contains("ca_file") && msg.contains(&reg.host()),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    // The CA registered for another host does not help this one.
    let mut o = opts();
    o.hosts.insert(
        "other.example".into(),
        HostOptions {
            insecure: false,
            ca_file: reg.ca_pem(),
        },
    );
    assert!(
        Registry::new(o)
            .unwrap()
            .open_blob(&url, &digest, None)
            .is_err()
    );
    // A credential server over HTTPS with a pinned CA (the registry's /v2/ answers `{}`,
    // so getting to the JSON check proves the TLS handshake worked), and without the CA.
    let creds = |ca| {
        HttpCredentials::new(
            HttpMode::Https,
            format!("{}/v2/", reg.url()),
            Duration::from_secs(3),
            None,
            ca,
        )
    };
    let e = creds(reg.ca_pem()).lookup(&url).unwrap_err();
    assert!(e.to_string().contains("$.success"), "{e}");
    let e = creds(None).lookup(&url).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    // insecure for this host only.
    let mut o = opts();
    o.hosts.insert(
        "127.0.0.1".into(),
        HostOptions {
            insecure: true,
            ca_file: None,
        },
    );
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap();
    check_random_reads(&*f, &data, 10, 2);
}

#[test]
fn redirect_location_cached_and_dropped_on_failure() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(1 << 20, 5);
    let digest = reg.push_blob("test/redir", &data);
    // client -> front (307) -> back (the "CDN", can fail) -> registry
    let back = FaultProxy::start(&reg.url());
    let front = FaultProxy::start(&back.url());
    front.set_redirect(true);
    let o = RegistryOptions {
        timeout: Duration::from_secs(5),
        retries: 2,
        ..Default::default()
    };
    let r = Registry::new(o).unwrap();
    let f = r
        .open_blob(
            &front.blob_url("test/redir"),
            &digest,
            Some(data.len() as u64),
        )
        .unwrap();
    assert!(f.read_vec(0, 4096).unwrap() == data[..4096]);
    assert_eq!(front.stats().redirects_sent, 1);
    let target = f.redirect_target().expect("redirect cached");
    assert!(target.starts_with(&back.url()), "{target}");
    check_random_reads(&*f, &data, 20, 3);
    assert_eq!(front.stats().redirects_sent, 1, "cached Location reused");
    // The target fails: the cached location is dropped and re-resolved on every retry.
    back.set_faults(obd_testkit::Faults {
        p_5xx: 1.0,
        ..Default::default()
    });
    let e = f.read_vec(0, 10).unwrap_err();
    eprintln!("error: {e}");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(
        e.to_string().contains("redirect target") && e.to_string().contains("HTTP 5"),
        "{e}"
    );
    assert_eq!(
        front.stats().redirects_sent,
        1 + 2,
        "one re-resolution per retry"
    );
    assert!(f.redirect_target().is_none());
    back.set_faults(obd_testkit::Faults::default());
    assert!(f.read_vec(10, 10).unwrap() == data[10..20]);
    assert_eq!(front.stats().redirects_sent, 4);
}

#[test]
fn p2p_prefix_used_when_reachable_else_direct() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(1 << 20, 6);
    let digest = reg.push_blob("test/p2p", &data);
    let fwd = Forwarder::start("dadip2p", false);
    let o = RegistryOptions {
        p2p_prefix: Some(fwd.url()),
        ..opts()
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("test/p2p"), &digest, None)
        .unwrap();
    assert!(f.uses_p2p());
    check_random_reads(&*f, &data, 10, 4);
    assert!(fwd.hits() >= 11, "p2p proxy hits: {}", fwd.hits());
    // Unreachable proxy at open: direct reads.
    let o = RegistryOptions {
        p2p_prefix: Some(format!("http://{}/dadip2p", dead_addr())),
        ..opts()
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("test/p2p"), &digest, None)
        .unwrap();
    assert!(!f.uses_p2p());
    check_random_reads(&*f, &data, 5, 5);
    // The proxy goes away after open: the blob falls back to direct access.
    let fwd2 = Forwarder::start("p", false);
    let o = RegistryOptions {
        p2p_prefix: Some(fwd2.url()),
        ..opts()
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("test/p2p"), &digest, Some(data.len() as u64))
        .unwrap();
    assert!(f.uses_p2p());
    drop(fwd2);
    check_random_reads(&*f, &data, 5, 6);
    assert!(!f.uses_p2p());
}

#[test]
fn server_ignoring_range_never_yields_wrong_bytes() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(3 << 20, 7);
    let digest = reg.push_blob("test/norange", &data);
    let fwd = Forwarder::start("fwd", true);
    let o = RegistryOptions {
        p2p_prefix: Some(fwd.url()),
        ..opts()
    };
    let f: Arc<_> = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("test/norange"), &digest, None)
        .unwrap();
    assert_eq!(f.size(), data.len() as u64);
    check_random_reads(&*f, &data, 10, 7);
    assert!(f.read_vec(data.len() as u64 - 3, 3).unwrap() == data[data.len() - 3..]);
}

#[test]
fn registry_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Registry>();
    fn check_file<T: ReadAt + Send + Sync + 'static>() {}
    check_file::<obd_registry::RemoteBlobFile>();
}

#[test]
fn background_reads_yield_to_demand_reads() {
    let reg = skip_on_err!(plain());
    let data = random_bytes(100_000, 8);
    let digest = reg.push_blob("test/prio", &data);
    let f = Registry::new(opts())
        .unwrap()
        .open_blob(&reg.blob_url("test/prio"), &digest, Some(data.len() as u64))
        .unwrap();
    // A demand read in flight (held open here) delays a background read (bounded: 500 ms).
    let demand = obd_core::priority::DemandGuard::new();
    let t = std::time::Instant::now();
    let got = obd_core::priority::background(|| f.read_vec(0, 1000).unwrap());
    assert!(got == data[..1000]);
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    drop(demand);
    // Without demand it goes straight through.
    let t = std::time::Instant::now();
    obd_core::priority::background(|| f.read_vec(0, 1000).unwrap());
    assert!(t.elapsed() < Duration::from_millis(450) || obd_core::priority::demand_in_flight() > 0);
}

#[test]
fn client_certificate_is_loaded_for_tls() {
    let Ok(openssl) = obd_testkit::find_binary("openssl") else {
        eprintln!("SKIP: openssl is not installed");
        return;
    };
    let reg = skip_on_err!(RegistryServer::start(RegistryOpts {
        auth: Auth::None,
        tls: true,
        storage: None,
    }));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    let st = std::process::Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=obd-client",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let data = random_bytes(10_000, 9);
    let digest = reg.push_blob("test/mtls", &data);
    let mut o = opts();
    o.client_cert = Some((cert, key));
    o.hosts.insert(
        reg.host(),
        HostOptions {
            insecure: false,
            ca_file: reg.ca_pem(),
        },
    );
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("test/mtls"), &digest, None)
        .unwrap();
    assert!(f.read_vec(0, 10_000).unwrap() == data);
}
