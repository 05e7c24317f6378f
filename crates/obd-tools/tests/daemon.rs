//! The daemon and its CLI without kernel exports: attach/list/detach over NBD unix sockets,
//! bad configs, restart and restore, auto-start. (Kernel-level FUSE/loop tests live in
//! e2e_fuse.rs, e2e_nbd.rs, crash.rs and many.rs.)

mod svc;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use svc::*;

const MIB: u64 = 1 << 20;

/// A two-layer read-only image: returns (lowers, expected device bytes of the first 4 MiB).
fn small_image(dir: &Path) -> (Vec<PathBuf>, Vec<u8>) {
    let vsize = 64 * MIB;
    let a = pattern(1, MIB as usize);
    let b = pattern(2, 512 * 1024);
    let l0 = dir.join("l0.commit");
    let l1 = dir.join("l1.commit");
    committed_layer(dir, &l0, vsize, &[(0, a.clone())]);
    committed_layer(dir, &l1, vsize, &[(MIB / 2, b.clone())]);
    let mut expect = vec![0u8; 4 * MIB as usize];
    expect[..MIB as usize].copy_from_slice(&a);
    expect[MIB as usize / 2..MIB as usize / 2 + b.len()].copy_from_slice(&b);
    (vec![l0, l1], expect)
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("spawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read the first `len` bytes of an NBD unix export with nbdcopy, when it is installed.
fn nbd_read(sock: &Path, len: usize) -> Option<Vec<u8>> {
    which("nbdcopy")?;
    let out = Command::new("nbdcopy")
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .arg("-")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nbdcopy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout[..len].to_vec())
}

#[test]
fn status_without_a_daemon_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::new(dir.path());
    let (ok, _, err) = run(&mut d.obd("status"));
    assert!(!ok);
    assert!(err.contains("no obd daemon is listening on"), "{err}");
    assert!(err.contains("obd.sock"), "{err}");
    let (ok, _, err) = run(&mut d.obd("list"));
    assert!(!ok && err.contains("no obd daemon"), "{err}");
}

#[test]
fn attach_list_detach_restart_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (lowers, expect) = small_image(dir.path());
    let cfg = dir.path().join("dev.json");
    device_config(&cfg, &lowers, None);
    let mut d = Daemon::new(dir.path());
    d.start();
    let sock = dir.path().join("dev.sock");
    let (ok, out, err) = run(d
        .obd("attach")
        .arg(&cfg)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display())));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("unix:{}", sock.display()));
    assert_eq!(result_of(&cfg), "success");
    if let Some(bytes) = nbd_read(&sock, expect.len()) {
        assert!(bytes == expect, "device bytes differ");
    } else {
        eprintln!("SKIP read check: nbdcopy not installed");
    }

    // The same attach again is a no-op success; another config on the same export is refused.
    let (ok, out, err) = run(d
        .obd("attach")
        .arg(&cfg)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display())));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("unix:{}", sock.display()));
    let other = dir.path().join("other.json");
    device_config(&other, &lowers[..1], None);
    let (ok, _, err) = run(d
        .obd("attach")
        .arg(&other)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display())));
    assert!(!ok && err.contains("already attached"), "{err}");

    let (ok, out, _) = run(d.obd("list").arg("--json"));
    assert!(ok);
    let list: Vec<obd_daemon::DeviceEntry> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].size, 64 * MIB);
    assert!(list[0].read_only);
    assert_eq!(list[0].lowers, 2);
    let (ok, out, _) = run(&mut d.obd("list"));
    assert!(
        ok && out.contains("dev.sock") && out.contains("ro"),
        "{out}"
    );
    let (ok, out, _) = run(&mut d.obd("status"));
    assert!(ok && out.contains("\"devices\": 1"), "{out}");

    // SIGTERM: clean exit, socket removed; the next daemon restores the device.
    assert!(d.terminate(), "daemon exit status after SIGTERM");
    assert!(!d.socket.exists(), "control socket left behind");
    d.start();
    assert_eq!(d.client().list().unwrap().len(), 1, "device not restored");
    if let Some(bytes) = nbd_read(&sock, expect.len()) {
        assert!(bytes == expect, "restored device bytes differ");
    }
    let (ok, _, err) = run(d.obd("detach").arg(format!("unix:{}", sock.display())));
    assert!(ok, "{err}");
    assert!(d.client().list().unwrap().is_empty());
    assert!(!sock.exists(), "NBD socket left behind");
    let (ok, _, err) = run(d.obd("detach").arg(format!("unix:{}", sock.display())));
    assert!(!ok && err.contains("no attached device"), "{err}");
    assert!(d.terminate());
    d.start();
    assert!(
        d.client().list().unwrap().is_empty(),
        "a detached device came back"
    );
    let log = fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("attached") && log.contains("detached"),
        "{log}"
    );
}

#[test]
fn bad_configs_fail_clearly_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (lowers, expect) = small_image(p);
    let good = p.join("good.json");
    device_config(&good, &lowers, None);
    let mut d = Daemon::new(p);
    d.start();
    let good_sock = p.join("good.sock");
    let (ok, _, err) = run(d
        .obd("attach")
        .arg(&good)
        .arg("--nbd")
        .arg(format!("unix:{}", good_sock.display())));
    assert!(ok, "{err}");

    let corrupt = p.join("corrupt.commit");
    let mut bytes = fs::read(&lowers[0]).unwrap();
    bytes.truncate(bytes.len() - 3000);
    fs::write(&corrupt, &bytes).unwrap();
    let up_only = p.join("up.data");
    fs::write(&up_only, b"").unwrap();
    let many: Vec<_> = (0..256)
        .map(|_| serde_json::json!({ "file": lowers[0] }))
        .collect();
    let l0 = lowers[0].display().to_string();
    // (name, config JSON text, text the error must contain, whether resultFile gets failed:)
    let cases: Vec<(&str, String, &str, bool)> = vec![
        ("not-json", "{ \"lowers\": [ ".into(), "bad-not-json.json", false),
        ("wrong-type", r#"{"lowers":[{"file": 7}]}"#.into(), "lowers[0].file", false),
        ("empty-lower", r#"{"lowers":[{}], "resultFile": "RF"}"#.into(), "lowers[0]", true),
        (
            "missing-file",
            r#"{"lowers":[{"file": "/nonexistent/layer.commit"}], "resultFile": "RF"}"#.into(),
            "/nonexistent/layer.commit",
            true,
        ),
        (
            "corrupt-layer",
            format!(r#"{{"lowers":[{{"file": "{}"}}], "resultFile": "RF"}}"#, corrupt.display()),
            "corrupt.commit",
            true,
        ),
        (
            "upper-half",
            format!(r#"{{"lowers":[{{"file": "{l0}"}}], "upper": {{"data": "{}"}}, "resultFile": "RF"}}"#, up_only.display()),
            "upper",
            true,
        ),
        (
            "too-many-lowers",
            serde_json::json!({ "lowers": many, "resultFile": "RF" }).to_string(),
            "255",
            true,
        ),
        (
            "remote-without-registry",
            r#"{"lowers":[{"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "size": 100}], "resultFile": "RF"}"#.into(),
            "sha256:0123456789abcdef",
            true,
        ),
    ];
    for (name, text, needle, has_result) in cases {
        let cfg = p.join(format!("bad-{name}.json"));
        let rf = p.join(format!("bad-{name}.result"));
        fs::write(&cfg, text.replace("RF", rf.to_str().unwrap())).unwrap();
        let sock = p.join(format!("{name}.sock"));
        let (ok, _, err) = run(d
            .obd("attach")
            .arg(&cfg)
            .arg("--nbd")
            .arg(format!("unix:{}", sock.display())));
        assert!(!ok, "{name}: attach succeeded");
        assert!(
            err.contains(needle),
            "{name}: error lacks '{needle}': {err}"
        );
        if has_result {
            let r = fs::read_to_string(&rf).unwrap_or_default();
            assert!(r.starts_with("failed:"), "{name}: resultFile is '{r}'");
            assert!(
                r.contains(needle),
                "{name}: resultFile lacks '{needle}': {r}"
            );
        }
        assert!(
            !sock.exists(),
            "{name}: NBD socket created for a failed attach"
        );
        d.client()
            .health()
            .unwrap_or_else(|e| panic!("{name}: daemon down: {e}"));
    }
    let list = d.client().list().unwrap();
    assert_eq!(list.len(), 1, "the good device must be the only one");
    if let Some(bytes) = nbd_read(&good_sock, expect.len()) {
        assert!(bytes == expect, "good device bytes changed");
    }
    let log = fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("corrupt.commit") && log.contains("/nonexistent/layer.commit"),
        "{log}"
    );
}

#[test]
fn unknown_config_fields_warn_but_attach() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (lowers, _) = small_image(p);
    let cfg = p.join("dev.json");
    let text = serde_json::json!({
        "lowers": [{ "file": lowers[0], "someFutureField": 1 }],
        "resultFile": p.join("dev.result"),
        "topLevelExtra": true,
    });
    fs::write(&cfg, text.to_string()).unwrap();
    let mut d = Daemon::new(p);
    d.start();
    let sock = p.join("dev.sock");
    let (ok, _, err) = run(d
        .obd("attach")
        .arg(&cfg)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display())));
    assert!(ok, "{err}");
    let log = fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("someFutureField") && log.contains("topLevelExtra"),
        "{log}"
    );
}

#[test]
fn attach_starts_a_daemon_when_none_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (lowers, _) = small_image(p);
    let cfg = p.join("dev.json");
    device_config(&cfg, &lowers, None);
    let d = Daemon::new(p);
    let sock = p.join("dev.sock");
    let (ok, _, err) = run(d
        .obd("attach")
        .arg(&cfg)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display())));
    assert!(ok, "{err}");
    assert!(err.contains("started the obd daemon"), "{err}");
    let h = d.client().health().unwrap();
    assert_eq!(h.devices, 1);
    // --no-start with another socket fails instead of starting one.
    let (ok, _, err) = run(d
        .obd("attach")
        .arg(&cfg)
        .arg("--nbd")
        .arg("unix:/tmp/never.sock")
        .arg("--no-start")
        .arg("--socket")
        .arg(p.join("other.sock")));
    assert!(!ok && err.contains("no obd daemon"), "{err}");
    d.client().shutdown().unwrap();
    for _ in 0..500 {
        if !d.socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!d.socket.exists(), "daemon did not stop on /v1/shutdown");
    assert!(!sock.exists());
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::new(dir.path());
    d.start();
    let (ok, _, err) = run(&mut d.obd("serve"));
    assert!(!ok && err.contains("already serving"), "{err}");
    d.client().health().unwrap();
}
