//! Child processes that never outlive their owner (nor the test process), and free ports.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// One long-lived thread spawns every child. With `setpriv --pdeathsig KILL` the kernel kills
/// a child when the thread that forked it dies; this thread lives as long as the process, so
/// children die with the test process even when a guard is leaked (e.g. in a `static`).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("obd-testkit-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("obd-testkit: cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    })
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| crate::find_binary("setpriv").ok())
        .as_deref()
}

/// A child process killed (SIGKILL) and reaped on drop.
pub(crate) struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `program args..` with stdin closed and stdout+stderr appended to `log`.
    pub(crate) fn spawn<S: AsRef<OsStr>>(
        name: &str,
        program: &Path,
        args: &[S],
        log: &Path,
    ) -> io::Result<ChildGuard> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = match setpriv() {
            Some(sp) => {
                let mut c = Command::new(sp);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| io::Error::other("spawner lock poisoned"))?
            .send((cmd, tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        let child = rx
            .recv()
            .map_err(|_| io::Error::other("spawner thread is gone"))??;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    /// `Some(status text)` when the child has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Process id (for debugging messages).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Err(e) = self.child.kill()
        {
            eprintln!(
                "obd-testkit: cannot kill {} ({}): {e}",
                self.name,
                self.id()
            );
        }
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a bind race).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("obd-testkit: cannot bind 127.0.0.1:0: {e}"))
}

/// Runs a program to completion; panics with its output when it fails.
pub(crate) fn run_checked<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("obd-testkit: cannot run {}: {e}", program.display()));
    if !out.status.success() {
        panic!(
            "obd-testkit: {} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}
