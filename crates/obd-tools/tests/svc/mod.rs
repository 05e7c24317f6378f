//! Test support for the daemon and exports: a daemon in a private directory, images built
//! with the layer libraries, capability checks, and cleanup of mounts and loop devices.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use obd_core::BlockDevice;
use obd_lsmt::{AppendLayer, CreateOptions};

/// Why the kernel-level tests (FUSE, loop, mount) cannot run here, if they cannot.
pub fn kernel_skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (mount, losetup)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop module)".into());
    }
    for t in ["losetup", "mount", "umount", "mke2fs", "e2fsck"] {
        if which(t).is_none() {
            return Some(format!("{t} is not installed"));
        }
    }
    None
}

/// Print a skip line and return true when `reason` is set.
pub fn skip(test: &str, reason: Option<String>) -> bool {
    match reason {
        Some(r) => {
            eprintln!("SKIP {test}: {r}");
            true
        }
        None => false,
    }
}

/// Find an executable on PATH (also /usr/sbin and /sbin).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Run a system command and require success; returns stdout.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(which(cmd).unwrap_or_else(|| PathBuf::from(cmd)))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `obd` binary.
pub fn obd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_obd")
}

/// A daemon with its own socket, state directory and log, all under `dir`.
pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Write the global config under `dir` (not started yet).
    pub fn new(dir: &Path) -> Daemon {
        let config = dir.join("overlaybd.json");
        let socket = dir.join("obd.sock");
        let log = dir.join("log/obd.log");
        let cfg = serde_json::json!({
            "logConfig": { "logLevel": 1, "logPath": log, "logSizeMB": 1, "logRotateNum": 2 },
            "daemon": { "socket": socket, "stateDir": dir.join("state") },
            // Each test daemon has its own registry cache (not the machine's default dir).
            "cacheConfig": { "cacheDir": dir.join("cache") },
            "registry": { "dockerConfig": false },
        });
        fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Daemon {
            dir: dir.to_path_buf(),
            config,
            socket,
            log,
            child: None,
        }
    }

    /// Start `obd serve` and wait until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let err = fs::File::create(self.dir.join("serve.stderr")).unwrap();
        let child = Command::new(obd_bin())
            .args(["serve", "--service-config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn obd serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Wait until the daemon answers its health check.
    pub fn wait_ready(&mut self) {
        let client = obd_daemon::Client::new(&self.socket);
        let t0 = Instant::now();
        loop {
            if client.health().is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("obd serve exited with {st}: {}", self.stderr());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "daemon not ready: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("serve.stderr")).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// A client of this daemon.
    pub fn client(&self) -> obd_daemon::Client {
        obd_daemon::Client::new(&self.socket)
    }

    /// An `obd` command bound to this daemon's global config.
    pub fn obd(&self, sub: &str) -> Command {
        let mut c = Command::new(obd_bin());
        c.arg(sub)
            .arg("--service-config")
            .arg(&self.config)
            .stdin(Stdio::null());
        c
    }

    /// `obd attach CFG --fuse|--nbd TARGET`, which must succeed; returns its stdout.
    pub fn attach(&self, cfg: &Path, how: &str, target: impl AsRef<std::ffi::OsStr>) -> String {
        let out = self
            .obd("attach")
            .arg(cfg)
            .arg(how)
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "attach {} {how}: {}",
            cfg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns its exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon ignored SIGTERM for 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Threads of the daemon process.
    pub fn threads(&self) -> usize {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        cleanup_under(&self.dir);
        self.terminate_quietly();
        cleanup_under(&self.dir);
    }
}

impl Daemon {
    fn terminate_quietly(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..500 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Mount points (from /proc/self/mountinfo) under `dir`, deepest first, with their fs type.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<(PathBuf, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = PathBuf::from(f.get(4)?.replace("\\040", " "));
            let sep = f.iter().position(|x| *x == "-")?;
            let fstype = f.get(sep + 1)?.to_string();
            mp.starts_with(dir).then_some((mp, fstype))
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0));
    v
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file"))
                && Path::new(b.trim_end()).starts_with(dir)
            {
                v.push(format!("/dev/{name}"));
            }
        }
    }
    v
}

/// Unmount filesystems, detach loop devices, then unmount FUSE files under `dir`.
pub fn cleanup_under(dir: &Path) {
    for (mp, fstype) in mounts_under(dir) {
        if !fstype.starts_with("fuse") {
            let _ = Command::new("umount").arg(&mp).status();
        }
    }
    for l in loops_under(dir) {
        let _ = Command::new("losetup").args(["-d", &l]).status();
    }
    for (mp, _) in mounts_under(dir) {
        if Command::new("umount")
            .arg(&mp)
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
}

/// Attach `file` to a new loop device; returns its path.
pub fn losetup(file: &Path, read_only: bool) -> String {
    let mut args = vec!["-f", "--show"];
    if read_only {
        args.insert(0, "-r");
    }
    let f = file.to_str().unwrap();
    args.push(f);
    sh("losetup", &args).trim().to_string()
}

/// Build a committed LSMT layer at `out` with the given (offset, bytes) writes.
pub fn committed_layer(dir: &Path, out: &Path, vsize: u64, writes: &[(u64, Vec<u8>)]) {
    let name = out.file_name().unwrap().to_string_lossy().to_string();
    let data = dir.join(format!("{name}.rw.data"));
    let index = dir.join(format!("{name}.rw.index"));
    let layer = AppendLayer::create(&data, &index, vsize, CreateOptions::default()).unwrap();
    for (off, bytes) in writes {
        layer.write_at(bytes, *off).unwrap();
    }
    layer.flush().unwrap();
    drop(layer);
    let st = Command::new(env!("CARGO_BIN_EXE_overlaybd-commit"))
        .arg(&data)
        .arg(&index)
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_file(&data).unwrap();
    fs::remove_file(&index).unwrap();
}

/// `overlaybd-commit [-z] DATA INDEX OUT`, which must succeed.
pub fn commit_layer(data: &Path, index: &Path, out: &Path, compress: bool) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_overlaybd-commit"));
    if compress {
        c.arg("-z");
    }
    let res = c.arg(data).arg(index).arg(out).output().unwrap();
    assert!(
        res.status.success(),
        "commit {}: {}",
        data.display(),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// Write a device config with these lowers and optional (data, index) upper.
pub fn device_config(path: &Path, lowers: &[PathBuf], upper: Option<(&Path, &Path)>) {
    let lowers: Vec<_> = lowers
        .iter()
        .map(|l| serde_json::json!({ "file": l }))
        .collect();
    let mut cfg = serde_json::json!({
        "lowers": lowers,
        "resultFile": path.with_extension("result"),
    });
    if let Some((d, i)) = upper {
        cfg["upper"] = serde_json::json!({ "data": d, "index": i });
    }
    fs::write(path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

/// The resultFile content of a config written by [`device_config`].
pub fn result_of(config: &Path) -> String {
    fs::read_to_string(config.with_extension("result")).unwrap_or_default()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A source tree: one large file, many small ones in nested dirs, a symlink, an empty file.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    fs::write(root.join("large.bin"), pattern(7, 40 << 20)).unwrap();
    for d in 0..12 {
        let sub = root.join(format!("dir{d:02}/nested"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..40 {
            let len = (d * 977 + f * 131) % 9000;
            fs::write(
                sub.join(format!("f{f:03}.txt")),
                pattern((d * 100 + f) as u64, len),
            )
            .unwrap();
        }
    }
    fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("dir00/nested/f001.txt", root.join("link")).unwrap();
}

/// `diff -r` of two trees (no symlink following); panics with the diff on mismatch.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", "-x", "lost+found"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make an ext4 base layer with `obd create --mkfs` and commit it.
pub fn mkfs_base(dir: &Path, vsize: u64) -> std::path::PathBuf {
    let data = dir.join("base.data");
    let index = dir.join("base.index");
    let out = Command::new(obd_bin())
        .args(["create", "--mkfs", "--vsize-bytes", &vsize.to_string()])
        .arg(&data)
        .arg(&index)
        .arg("1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = dir.join("base.commit");
    commit_layer(&data, &index, &base, false);
    base
}

/// A new empty writable layer (data, index).
pub fn new_upper(dir: &Path, name: &str, vsize: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join(format!("{name}.data"));
    let index = dir.join(format!("{name}.index"));
    let out = Command::new(env!("CARGO_BIN_EXE_overlaybd-create"))
        .arg(&data)
        .arg(&index)
        .arg("1")
        .args(["--vsize-bytes", &vsize.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (data, index)
}

/// An ext4 base layer (mkfs'd, committed), an empty upper over it, their config `rw.json`,
/// and a source tree to copy in.
pub struct RwStack {
    pub base: PathBuf,
    pub up_data: PathBuf,
    pub up_index: PathBuf,
    pub rw_cfg: PathBuf,
    pub src: PathBuf,
}

/// Build an [`RwStack`] under `dir`.
pub fn rw_stack(dir: &Path, vsize: u64) -> RwStack {
    let base = mkfs_base(dir, vsize);
    let (up_data, up_index) = new_upper(dir, "up", vsize);
    let rw_cfg = dir.join("rw.json");
    device_config(
        &rw_cfg,
        std::slice::from_ref(&base),
        Some((&up_data, &up_index)),
    );
    let src = dir.join("src");
    make_tree(&src);
    RwStack {
        base,
        up_data,
        up_index,
        rw_cfg,
        src,
    }
}
