//! End to end through the kernel: mkfs'd base layer → daemon → FUSE file → loop → ext4 →
//! write a tree → commit the upper (-z) → attach the stack read-only → every file equal.

mod svc;

use std::fs;
use std::process::Command;

use svc::*;

const MIB: u64 = 1 << 20;

#[test]
fn ext4_through_fuse_write_commit_and_reread() {
    if skip("ext4_through_fuse", kernel_skip_reason()) {
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
    let disk = p.join("disk.img");
    let printed = d.attach(&rw_cfg, "--fuse", &disk);
    assert_eq!(printed.trim(), disk.display().to_string());
    assert_eq!(fs::metadata(&disk).unwrap().len(), vsize);
    let lo = losetup(&disk, false);
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
    // Detach refuses while the loop device holds the file.
    let out = d.obd("detach").arg(&disk).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("losetup -d"));
    sh("losetup", &["-d", &lo]);
    let out = d.obd("detach").arg(&disk).output().unwrap();
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        mounts_under(p).is_empty(),
        "mounts left: {:?}",
        mounts_under(p)
    );

    let layer1 = p.join("layer1.commit");
    commit_layer(&up_data, &up_index, &layer1, true);
    let ro_cfg = p.join("ro.json");
    device_config(&ro_cfg, &[base, layer1], None);
    let ro = p.join("ro.img");
    d.attach(&ro_cfg, "--fuse", &ro);
    // The read-only file refuses writes.
    assert!(
        fs::OpenOptions::new().write(true).open(&ro).is_err(),
        "read-only export opened for write"
    );
    let lo = losetup(&ro, true);
    sh("e2fsck", &["-fn", &lo]);
    sh("mount", &["-o", "ro", &lo, mnt.to_str().unwrap()]);
    assert_same_tree(&src, &mnt);
    sh("umount", &[mnt.to_str().unwrap()]);
    sh("losetup", &["-d", &lo]);
    let out = d.obd("detach").arg(&ro).output().unwrap();
    assert!(out.status.success());
    assert!(d.terminate());
    assert!(mounts_under(p).is_empty());
    assert!(loops_under(p).is_empty());
}

#[test]
fn sigterm_flushes_and_unmounts() {
    if skip("sigterm_flushes_and_unmounts", kernel_skip_reason()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let vsize = 32 * MIB;
    let base = p.join("base.commit");
    committed_layer(p, &base, vsize, &[(0, pattern(3, MIB as usize))]);
    let (up_data, up_index) = new_upper(p, "up", vsize);
    let cfg = p.join("rw.json");
    device_config(
        &cfg,
        std::slice::from_ref(&base),
        Some((&up_data, &up_index)),
    );
    let mut d = Daemon::new(p);
    d.start();
    let disk = p.join("disk.img");
    d.attach(&cfg, "--fuse", &disk);
    let data = pattern(9, 3 * MIB as usize);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&data, 5 * MIB).unwrap();
        // no fsync: SIGTERM must flush
    }
    assert!(d.terminate());
    assert!(mounts_under(p).is_empty(), "FUSE mount left after SIGTERM");
    // The upper now holds the data: read the device offline.
    let out = Command::new(obd_bin())
        .arg("read")
        .arg(&cfg)
        .args([
            "--offset",
            &(5 * MIB).to_string(),
            "--len",
            &(3 * MIB).to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "data written before SIGTERM is missing");
}
