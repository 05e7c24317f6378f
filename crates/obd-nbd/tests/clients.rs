//! Real NBD clients against the server: nbdinfo, qemu-img, qemu-io, nbdcopy. Each test
//! skips with a printed reason when its tool is not installed.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tools::{have, run_ok, run_timeout};
use common::*;
use obd_core::{MemDevice, ReadOnly};
use obd_nbd::{NbdAddr, NbdServer};

const SIZE: usize = 64 << 20;

/// Two servers for the same memory device: unix socket and TCP loopback.
fn both_servers(dev: Arc<MemDevice>, name: &str) -> (Vec<NbdServer>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let unix =
        NbdServer::start(dev.clone(), &NbdAddr::Unix(dir.path().join("s.sock")), name).unwrap();
    let tcp = NbdServer::start(dev, &NbdAddr::Tcp("127.0.0.1:0".into()), name).unwrap();
    (vec![unix, tcp], dir)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn nbdinfo_reports_size_and_flags() {
    if !have("nbdinfo", &["nbdinfo"]) {
        return;
    }
    let dev = Arc::new(MemDevice::from_vec(pattern(SIZE, 1)));
    let (servers, _dir) = both_servers(dev, "disk");
    for s in &servers {
        let out = run_ok(
            Command::new("nbdinfo")
                .arg("--json")
                .arg(s.addr().uri("disk")),
        );
        let v = json(&out);
        let e = &v["exports"][0];
        assert_eq!(e["export-name"], "disk", "{out}");
        assert_eq!(e["export-size"], SIZE as u64, "{out}");
        assert_eq!(e["is_read_only"], false, "{out}");
        for flag in [
            "can_flush",
            "can_fua",
            "can_trim",
            "can_zero",
            "can_multi_conn",
        ] {
            assert_eq!(e[flag], true, "{flag}: {out}");
        }
        assert_eq!(e["block_size_maximum"], 32 << 20, "{out}");
        // The default export and the size shortcut.
        let size = run_ok(Command::new("nbdinfo").arg("--size").arg(s.addr().uri("")));
        assert_eq!(size.trim(), SIZE.to_string());
        // Listing.
        let list = run_ok(
            Command::new("nbdinfo")
                .arg("--list")
                .arg("--json")
                .arg(s.addr().uri("")),
        );
        assert_eq!(json(&list)["exports"][0]["export-name"], "disk", "{list}");
        // A wrong export name fails cleanly.
        let o = run_timeout(
            Command::new("nbdinfo").arg(s.addr().uri("wrong")),
            Duration::from_secs(60),
        );
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("wrong"), "{err}");
    }
}

#[test]
fn nbdinfo_sees_read_only_exports() {
    if !have("nbdinfo read-only", &["nbdinfo"]) {
        return;
    }
    let dev = Arc::new(ReadOnly(MemDevice::from_vec(pattern(1 << 20, 2))));
    let (server, _dir) = serve(dev, "ro");
    let out = run_ok(
        Command::new("nbdinfo")
            .arg("--json")
            .arg(server.addr().uri("ro")),
    );
    let e = &json(&out)["exports"][0];
    assert_eq!(e["is_read_only"], true, "{out}");
    assert_eq!(e["can_trim"], false, "{out}");
    let o = run_timeout(
        Command::new("nbdinfo")
            .args(["--is", "read-only"])
            .arg(server.addr().uri("ro")),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "--is read-only");
}

#[test]
fn qemu_img_info_and_qemu_io() {
    if !have("qemu-img/qemu-io", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dev = Arc::new(MemDevice::from_vec(pattern(SIZE, 3)));
    let (servers, _dir) = both_servers(dev.clone(), "q");
    for (i, s) in servers.iter().enumerate() {
        let uri = s.addr().uri("q");
        let out = run_ok(Command::new("qemu-img").args(["info", "--output=json", &uri]));
        let v = json(&out);
        assert_eq!(v["virtual-size"], SIZE as u64, "{out}");
        assert_eq!(v["format"], "raw", "{out}");

        let p = format!("{:#x}", 0xab + i);
        let off = (1 + i) << 20;
        let out = run_ok(Command::new("qemu-io").args([
            "-f",
            "raw",
            "-c",
            &format!("write -P {p} {off} 64k"),
            "-c",
            &format!("read -P {p} {off} 64k"),
            "-c",
            "write -z 8M 1M",
            "-c",
            "read -P 0 8M 1M",
            "-c",
            "discard 12M 64k",
            "-c",
            "read -P 0 12M 64k",
            "-c",
            "write -P 0x11 100 1000",
            "-c",
            "read -P 0x11 100 1000",
            "-c",
            "flush",
            &uri,
        ]));
        assert!(!out.contains("fail") && !out.contains("error"), "{out}");
        assert_eq!(out.matches("read ").count(), 4, "{out}");
        let v = dev.to_vec();
        assert!(
            v[off..off + (64 << 10)]
                .iter()
                .all(|&b| b as usize == 0xab + i)
        );
        assert!(v[8 << 20..9 << 20].iter().all(|&b| b == 0));
        assert!(v[12 << 20..(12 << 20) + (64 << 10)].iter().all(|&b| b == 0));
        assert!(v[100..1100].iter().all(|&b| b == 0x11));
        // A failing pattern check is visible (so the check above means something).
        let out = run_timeout(
            Command::new("qemu-io").args(["-f", "raw", "-c", "read -P 0x99 0 4k", &uri]),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("Pattern verification failed"), "{text}");
        // Out of range.
        let out = run_timeout(
            Command::new("qemu-io").args(["-f", "raw", "-c", "read 64M 4k", &uri]),
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("read 4096/4096"), "{text}");
    }
}

#[test]
fn nbdcopy_both_ways_and_qemu_img_compare() {
    if !have("nbdcopy/qemu-img", &["nbdcopy", "qemu-img"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let content = pattern(SIZE, 4);
    let dev = Arc::new(MemDevice::from_vec(content.clone()));
    let (servers, _dir) = both_servers(dev.clone(), "c");
    for (i, s) in servers.iter().enumerate() {
        let uri = s.addr().uri("c");
        // Export → file.
        let out = work.path().join(format!("out{i}.img"));
        run_ok(Command::new("nbdcopy").arg(&uri).arg(&out));
        assert!(
            std::fs::read(&out).unwrap() == dev.to_vec(),
            "nbdcopy export → file"
        );
        if have("cmp", &["cmp"]) {
            let reference = work.path().join(format!("ref{i}.img"));
            std::fs::write(&reference, dev.to_vec()).unwrap();
            run_ok(Command::new("cmp").arg(&reference).arg(&out));
        }
        // qemu-img compare: identical, then different after one byte changes.
        run_ok(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(&out)
                .arg(&uri),
        );
        let mut c = connect(s.addr(), "c");
        c.write(12345, &[!content[12345]], 0).unwrap();
        let o = run_timeout(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(&out)
                .arg(&uri),
            Duration::from_secs(120),
        );
        assert_eq!(o.status.code(), Some(1), "compare must see the difference");
        // "Content mismatch at offset N!" with N the start of the differing block.
        let text = String::from_utf8_lossy(&o.stdout);
        let at: u64 = text
            .split("offset ")
            .nth(1)
            .and_then(|t| t.trim_end().trim_end_matches('!').parse().ok())
            .unwrap_or_else(|| panic!("no offset in {text:?}"));
        assert!(at <= 12345 && 12345 - at < 65536, "{text}");
        // File → export (with sparse zero runs, which nbdcopy sends as zero requests).
        let mut src = pattern(SIZE, 40 + i as u64);
        src[4 << 20..12 << 20].fill(0);
        let input = work.path().join(format!("in{i}.img"));
        std::fs::write(&input, &src).unwrap();
        run_ok(Command::new("nbdcopy").arg("--flush").arg(&input).arg(&uri));
        assert!(dev.to_vec() == src, "nbdcopy file → export");
        run_ok(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(&input)
                .arg(&uri),
        );
        // Through a pipe too.
        let piped = run_timeout(
            Command::new("nbdcopy").arg(&uri).arg("-"),
            Duration::from_secs(120),
        );
        assert!(piped.status.success());
        assert!(piped.stdout == src, "nbdcopy export → stdout");
        assert!(c.disc());
    }
}

#[test]
fn qemu_img_convert_from_the_export() {
    if !have("qemu-img convert", &["qemu-img"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let content = pattern(8 << 20, 5);
    let (server, _dev, _dir) = mem_server(content.clone(), "cv");
    let out = work.path().join("out.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                &server.addr().uri("cv"),
            ])
            .arg(&out),
    );
    let raw = work.path().join("back.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&out)
            .arg(&raw),
    );
    assert!(std::fs::read(&raw).unwrap() == content);
}

#[test]
fn nbdcopy_throughput_256m_to_null() {
    if !have("nbdcopy throughput", &["nbdcopy"]) {
        return;
    }
    let size = 256usize << 20;
    let dev = Arc::new(MemDevice::from_vec(pattern(size, 6)));
    let (servers, _dir) = both_servers(dev, "perf");
    for s in &servers {
        let uri = s.addr().uri("perf");
        let t = Instant::now();
        run_ok(Command::new("nbdcopy").arg(&uri).arg("null:"));
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "nbdcopy {} of 256 MiB to null: {:.2} s, {:.0} MiB/s",
            s.addr(),
            secs,
            256.0 / secs
        );
    }
}
