//! End to end through NBD: daemon → NBD export (unix socket and TCP) → nbdfuse → loop →
//! ext4; write a tree, commit the upper, re-read it read-only; plus the standard clients.

mod svc;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use svc::*;

const MIB: u64 = 1 << 20;

/// An nbdfuse process presenting `uri` as `<dir>/nbd`; unmounted on drop.
struct NbdFuse {
    dir: PathBuf,
    child: Child,
}

impl NbdFuse {
    fn start(dir: &Path, uri: &str, read_only: bool) -> NbdFuse {
        fs::create_dir_all(dir).unwrap();
        let mut c = Command::new("nbdfuse");
        if read_only {
            c.arg("-r");
        }
        let child = c.arg(dir).arg(uri).stdin(Stdio::null()).spawn().unwrap();
        let t0 = Instant::now();
        while !dir.join("nbd").exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nbdfuse did not mount {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NbdFuse {
            dir: dir.to_path_buf(),
            child,
        }
    }
    fn file(&self) -> PathBuf {
        self.dir.join("nbd")
    }
}

impl Drop for NbdFuse {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = self.child.wait();
    }
}

fn nbd_skip_reason() -> Option<String> {
    kernel_skip_reason().or_else(|| {
        ["nbdfuse", "nbdinfo", "qemu-img", "qemu-io"]
            .iter()
            .find(|t| which(t).is_none())
            .map(|t| format!("{t} is not installed (apt-get install libnbd-bin nbdkit qemu-utils)"))
    })
}

#[test]
fn ext4_through_nbd_write_commit_and_reread() {
    if skip("ext4_through_nbd", nbd_skip_reason()) {
        return;
    }
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
    let mut d = Daemon::new(p);
    d.start();

    let sock = p.join("rw.sock");
    d.attach(&rw_cfg, "--nbd", format!("unix:{}", sock.display()));
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let info = sh("nbdinfo", &[&uri]);
    assert!(info.contains(&vsize.to_string()), "{info}");
    let img = sh("qemu-img", &["info", &uri]);
    assert!(img.contains("256 MiB"), "{img}");
    {
        let nf = NbdFuse::start(&p.join("nbdmnt"), &uri, false);
        let lo = losetup(&nf.file(), false);
        let mnt = p.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        sh("mount", &[&lo, mnt.to_str().unwrap()]);
        sh(
            "cp",
            &["-a", &format!("{}/.", src.display()), mnt.to_str().unwrap()],
        );
        sh("sync", &[]);
        sh("umount", &[mnt.to_str().unwrap()]);
        sh("e2fsck", &["-fn", &lo]);
        sh("losetup", &["-d", &lo]);
    }
    let out = d
        .obd("detach")
        .arg(format!("unix:{}", sock.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let layer1 = p.join("layer1.commit");
    commit_layer(&up_data, &up_index, &layer1, true);
    let ro_cfg = p.join("ro.json");
    device_config(&ro_cfg, &[base, layer1], None);
    // Read-only over TCP on loopback this time.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("tcp:127.0.0.1:{port}");
    d.attach(&ro_cfg, "--nbd", &addr);
    let uri = format!("nbd://127.0.0.1:{port}");
    let io = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0xab 1M 4k", &uri])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&io.stdout).to_string() + &String::from_utf8_lossy(&io.stderr);
    assert!(
        !io.status.success() || text.contains("failed"),
        "write to a read-only export: {text}"
    );
    {
        let nf = NbdFuse::start(&p.join("nbdro"), &uri, true);
        let lo = losetup(&nf.file(), true);
        let mnt = p.join("mnt");
        sh("mount", &["-o", "ro", &lo, mnt.to_str().unwrap()]);
        assert_same_tree(&src, &mnt);
        sh("umount", &[mnt.to_str().unwrap()]);
        sh("losetup", &["-d", &lo]);
    }
    let out = d.obd("detach").arg(&addr).output().unwrap();
    assert!(out.status.success());
    assert!(d.terminate());
    assert!(mounts_under(p).is_empty());
}
