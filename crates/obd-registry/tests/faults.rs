//! Fault injection through the testkit's FaultProxy in front of a real docker-registry:
//! 5xx, resets, truncation and stalls must never produce wrong bytes, every read must end
//! (with the right bytes or an error) within the deadline, and permanent faults must give
//! bounded, clear errors.
//!
//! Flipped bytes are not tested for detection: a flipped byte inside a well-formed range
//! answer cannot be detected at this level (the ZFile CRC / cache verification layers do
//! that).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::random_bytes;
use obd_core::{ErrorKind, ReadAt};
use obd_registry::{Registry, RegistryOptions};
use obd_testkit::{FaultProxy, Faults, RegistryOpts, RegistryServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TIMEOUT: Duration = Duration::from_secs(2);

fn fault_opts() -> RegistryOptions {
    RegistryOptions {
        timeout: TIMEOUT,
        stall_timeout: Duration::from_millis(500),
        retries: 3,
        ..Default::default()
    }
}

#[test]
fn fault_matrix_never_returns_wrong_bytes() {
    let reg = skip_on_err!(RegistryServer::start(RegistryOpts::default()));
    let data = random_bytes(4 << 20, 21);
    let digest = reg.push_blob("test/faults", &data);
    let proxy = FaultProxy::start(&reg.url());
    let r = Registry::new(fault_opts()).unwrap();
    let f = r
        .open_blob(
            &proxy.blob_url("test/faults"),
            &digest,
            Some(data.len() as u64),
        )
        .unwrap();
    let base = Faults {
        only_ranges: true,
        stall: Duration::from_secs(3),
        ..Default::default()
    };
    let phases = [
        (
            "5xx",
            Faults {
                p_5xx: 0.1,
                seed: 1,
                ..base.clone()
            },
        ),
        (
            "reset",
            Faults {
                p_reset: 0.1,
                seed: 2,
                ..base.clone()
            },
        ),
        (
            "truncate",
            Faults {
                p_truncate: 0.1,
                seed: 3,
                ..base.clone()
            },
        ),
        (
            "stall",
            Faults {
                p_stall: 0.1,
                seed: 4,
                ..base.clone()
            },
        ),
        (
            "stall-mid-body",
            Faults {
                p_stall: 0.1,
                stall_mid_body: true,
                seed: 5,
                ..base.clone()
            },
        ),
        // Heavy: most attempts fail, so some reads exhaust their retries and must fail.
        (
            "heavy",
            Faults {
                p_5xx: 0.2,
                p_reset: 0.2,
                p_truncate: 0.2,
                seed: 7,
                ..base.clone()
            },
        ),
        (
            "mix",
            Faults {
                p_5xx: 0.03,
                p_reset: 0.03,
                p_truncate: 0.03,
                p_stall: 0.03,
                seed: 6,
                ..base.clone()
            },
        ),
    ];
    let (ok_total, err_total) = (AtomicU64::new(0), AtomicU64::new(0));
    for (name, faults) in phases {
        proxy.set_faults(faults);
        let before = proxy.stats().faults();
        let (ok, err) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (f, data, ok, err) = (&f, &data, &ok, &err);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(t * 31 + name.len() as u64);
                    for _ in 0..50 {
                        let off = rng.random_range(0..data.len());
                        let len = rng.random_range(1..=(data.len() - off).min(64 << 10));
                        let mut buf = vec![0u8; len];
                        let start = Instant::now();
                        let res = f.read_exact_at(&mut buf, off as u64);
                        let took = start.elapsed();
                        assert!(
                            took < TIMEOUT + Duration::from_secs(1),
                            "{name}: read took {took:?}"
                        );
                        match res {
                            Ok(()) => {
                                assert!(
                                    buf == data[off..off + len],
                                    "{name}: WRONG BYTES at {off}+{len}"
                                );
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                assert!(
                                    matches!(e.kind(), ErrorKind::Io | ErrorKind::TimedOut),
                                    "{name}: {e}"
                                );
                                err.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let injected = proxy.stats().faults() - before;
        let (ok, err) = (ok.into_inner(), err.into_inner());
        eprintln!("{name}: {ok} ok, {err} errors, {injected} faults injected");
        assert!(injected >= 15, "{name}: only {injected} faults injected");
        if name == "heavy" {
            assert!(ok > 200 && err > 0, "{name}: {ok} ok, {err} errors");
        } else {
            assert!(ok >= 380, "{name}: too many failed reads ({err})");
        }
        ok_total.fetch_add(ok, Ordering::Relaxed);
        err_total.fetch_add(err, Ordering::Relaxed);
    }
    let (ok, err) = (ok_total.into_inner(), err_total.into_inner());
    eprintln!("total: {ok} ok, {err} errors, stats {:?}", proxy.stats());
    assert!(ok + err >= 2000);
    let m = obd_metrics::Metrics::global().encode();
    for kind in ["http_5xx", "timeout", "truncated"] {
        assert!(
            m.contains(&format!("obd_errors_total{{kind=\"{kind}\"}}")),
            "no {kind} errors counted"
        );
    }
    assert!(m.contains(&format!("obd_registry_retries_total{{layer=\"{digest}\"}}")));
}

#[test]
fn permanent_faults_fail_bounded_with_clear_errors() {
    let reg = skip_on_err!(RegistryServer::start(RegistryOpts::default()));
    let data = random_bytes(1 << 20, 22);
    let digest = reg.push_blob("test/perm", &data);
    let proxy = FaultProxy::start(&reg.url());
    // Every request stalls far longer than the deadline; the stall limit is not reached
    // either: the one overall deadline ends the read.
    let o = RegistryOptions {
        timeout: TIMEOUT,
        ..Default::default()
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(
            &proxy.blob_url("test/perm"),
            &digest,
            Some(data.len() as u64),
        )
        .unwrap();
    proxy.set_faults(Faults {
        p_stall: 1.0,
        stall: Duration::from_secs(30),
        only_ranges: true,
        ..Default::default()
    });
    let t = Instant::now();
    let e = f.read_vec(4096, 1000).unwrap_err();
    eprintln!("error: {e}");
    let took = t.elapsed();
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(e.errno(), 5); // EIO to a block frontend
    let msg = e.to_string();
    for want in [digest.as_str(), "4096", "1000 bytes", "2s"] {
        assert!(msg.contains(want), "{want:?} missing in: {msg}");
    }
    // Permanent 5xx: retried `retries` times, then an Io error that says so.
    proxy.set_faults(Faults {
        p_5xx: 1.0,
        only_ranges: true,
        ..Default::default()
    });
    let before = proxy.stats().range_requests;
    let t = Instant::now();
    let e = f.read_vec(0, 10).unwrap_err();
    eprintln!("error: {e}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(
        e.to_string().contains("gave up after 4 attempts") && e.to_string().contains("HTTP 50"),
        "{e}"
    );
    assert_eq!(proxy.stats().range_requests - before, 4);
    // Permanent truncation: never wrong bytes, an error.
    proxy.set_faults(Faults {
        p_truncate: 1.0,
        only_ranges: true,
        ..Default::default()
    });
    let e = f.read_vec(0, 100_000).unwrap_err();
    eprintln!("error: {e}");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    // Faults off: reads work again on the same file.
    proxy.set_faults(Faults::default());
    assert!(f.read_vec(0, 100_000).unwrap() == data[..100_000]);
}
