//! The server: a listener thread, one thread per connection (plus its workers), and a
//! shutdown that drains them all.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use obd_core::{BlockDevice, Error, ErrorKind, Result, ResultExt};
use rustix::event::{PollFd, PollFlags};
use tracing::{debug, error, warn};

use crate::NbdAddr;
use crate::negotiate::{Export, negotiate};
use crate::stream::{Listener, Stream};
use crate::transmit;

/// Worker threads per connection: requests of one connection run this many at a time.
const WORKERS_PER_CONNECTION: usize = 4;
/// How long shutdown lets connections finish their in-flight requests before it cuts them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of a connection.
const READ_BUFFER: usize = 256 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the server handle, the accept thread and the connections.
struct Shared {
    export: Export,
    stopping: AtomicBool,
    /// A handle on each live connection's socket, to shut it down.
    conns: Mutex<HashMap<u64, Stream>>,
    conns_changed: Condvar,
}

/// An NBD server exporting one device, on a unix socket or a TCP address.
///
/// Clients asking for the export name given to [`NbdServer::start`], or for the default
/// export `""`, get the device; other names are refused. The server speaks fixed newstyle
/// with simple replies and supports READ, WRITE (with FUA), FLUSH, TRIM, WRITE_ZEROES and
/// DISC, with many requests in flight per connection and any number of connections
/// (`NBD_FLAG_CAN_MULTI_CONN`: a flush flushes the whole device).
pub struct NbdServer {
    addr: NbdAddr,
    shared: Arc<Shared>,
    accept: Option<AcceptThread>,
    wake: Option<UnixStream>,
    /// The socket file we created, with its device and inode numbers.
    socket_file: Option<(PathBuf, u64, u64)>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("addr", &self.addr)
            .field("export", &self.shared.export.name)
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// Bind `addr` and start serving `dev` as export `name`. Returns once the listener is
    /// bound, so clients can connect right away.
    ///
    /// For a unix socket, a stale socket file (nothing listening) is replaced; a live one,
    /// or a path that is not a socket, is an error.
    pub fn start(dev: Arc<dyn BlockDevice>, addr: &NbdAddr, name: &str) -> Result<NbdServer> {
        if name.len() > crate::proto::MAX_STRING_LEN || name.contains('\0') {
            return Err(Error::invalid_input(format!(
                "bad NBD export name {name:?}: at most 4096 bytes, no NUL"
            )));
        }
        let (listener, addr, socket_file) = bind(addr)?;
        let spawned = Self::spawn_acceptor(listener, &addr, dev, name);
        let (shared, accept, wake) = match spawned {
            Ok(parts) => parts,
            Err(e) => {
                remove_socket_file(socket_file.as_ref());
                return Err(e.context(&addr));
            }
        };
        debug!(export = %name, addr = %addr, "NBD server listening");
        Ok(NbdServer {
            addr,
            shared,
            accept: Some(accept),
            wake: Some(wake),
            socket_file,
        })
    }

    /// Start the accept thread on a bound listener.
    fn spawn_acceptor(
        listener: Listener,
        addr: &NbdAddr,
        dev: Arc<dyn BlockDevice>,
        name: &str,
    ) -> Result<(Arc<Shared>, AcceptThread, UnixStream)> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("set_nonblocking", e))?;
        let (wake_rx, wake_tx) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
        let shared = Arc::new(Shared {
            export: Export {
                dev,
                name: name.to_string(),
            },
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            conns_changed: Condvar::new(),
        });
        let sh = Arc::clone(&shared);
        let label = addr.to_string();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(&listener, &wake_rx, &sh, &label))
            .map_err(|e| Error::io("spawn", e))?;
        Ok((shared, accept, wake_tx))
    }

    /// The bound address (for TCP port 0, with the port that was picked).
    pub fn addr(&self) -> &NbdAddr {
        &self.addr
    }

    /// Export name.
    pub fn name(&self) -> &str {
        &self.shared.export.name
    }

    /// Live client connections (in handshake or transmission).
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Stop accepting, let in-flight requests finish and answer them, close every
    /// connection, join every thread, flush the device and remove the unix socket file.
    /// The error, if any, is the device flush's.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let Some(accept) = self.accept.take() else {
            return Ok(());
        };
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        if let Some(mut w) = self.wake.take() {
            let _ = w.write_all(&[1]);
        }
        let handles = accept.join().unwrap_or_else(|_| {
            error!(addr = %self.addr, "NBD accept thread panicked");
            Vec::new()
        });
        // Half-close: readers see end of stream, workers finish and answer what was read.
        for s in lock(&shared.conns).values() {
            let _ = s.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut conns = lock(&shared.conns);
        while !conns.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(addr = %self.addr, count = conns.len(), "NBD connections did not drain; cutting them");
                for s in conns.values() {
                    let _ = s.shutdown(Shutdown::Both);
                }
                break;
            }
            conns = shared
                .conns_changed
                .wait_timeout(conns, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(conns);
        for h in handles {
            if h.join().is_err() {
                error!(addr = %self.addr, "NBD connection thread panicked");
            }
        }
        let flushed = shared
            .export
            .dev
            .flush()
            .context(format_args!("flushing NBD export {:?}", shared.export.name));
        remove_socket_file(self.socket_file.take().as_ref());
        debug!(addr = %self.addr, "NBD server stopped");
        flushed
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!(addr = %self.addr, error = %e, "NBD server shutdown failed");
        }
    }
}

type Bound = (Listener, NbdAddr, Option<(PathBuf, u64, u64)>);
/// The accept thread; it returns the connection threads still to join.
type AcceptThread = JoinHandle<Vec<JoinHandle<()>>>;

fn bind(addr: &NbdAddr) -> Result<Bound> {
    match addr {
        NbdAddr::Tcp(hp) => {
            let l = TcpListener::bind(hp.as_str())
                .map_err(|e| Error::io("bind", e).context(format_args!("NBD address {addr}")))?;
            let local = l
                .local_addr()
                .map_err(|e| Error::io("getsockname", e).context(addr))?;
            Ok((Listener::Tcp(l), NbdAddr::Tcp(local.to_string()), None))
        }
        NbdAddr::Unix(path) => {
            clear_stale_socket(path)?;
            let l = UnixListener::bind(path).map_err(|e| Error::io("bind", e).with_path(path))?;
            let md = std::fs::symlink_metadata(path)
                .map_err(|e| Error::io("stat", e).with_path(path))?;
            let file = Some((path.clone(), md.dev(), md.ino()));
            Ok((Listener::Unix(l), addr.clone(), file))
        }
    }
}

/// Remove a socket file nobody listens on; refuse to touch a live socket or another file.
fn clear_stale_socket(path: &Path) -> Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", e).with_path(path)),
    };
    if !md.file_type().is_socket() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "exists and is not a socket; not replacing it",
        )
        .with_path(path));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(Error::new(
            ErrorKind::AlreadyExists,
            "another server is listening on this socket",
        )
        .with_path(path)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            debug!(path = %path.display(), "removing stale NBD socket");
            std::fs::remove_file(path)
                .map_err(|e| Error::io("remove stale socket", e).with_path(path))
        }
        Err(e) => Err(Error::io("probe socket", e).with_path(path)),
    }
}

/// Remove our socket file, unless something else replaced it meanwhile.
fn remove_socket_file(file: Option<&(PathBuf, u64, u64)>) {
    let Some((path, dev, ino)) = file else { return };
    if let Ok(md) = std::fs::symlink_metadata(path)
        && md.dev() == *dev
        && md.ino() == *ino
        && let Err(e) = std::fs::remove_file(path)
    {
        warn!(path = %path.display(), error = %e, "cannot remove NBD socket file");
    }
}

/// Accept connections until woken through `wake`; returns the connection threads.
fn accept_loop(
    listener: &Listener,
    wake: &UnixStream,
    shared: &Arc<Shared>,
    label: &str,
) -> Vec<JoinHandle<()>> {
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    loop {
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                error!(addr = %label, error = %e, "NBD listener poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let woken = !fds[1].revents().is_empty();
        let ready = !fds[0].revents().is_empty();
        if woken || shared.stopping.load(Ordering::Acquire) {
            break;
        }
        if !ready {
            continue;
        }
        // Reap connections that ended.
        let (done, live): (Vec<_>, Vec<_>) = handles.into_iter().partition(|h| h.is_finished());
        handles = live;
        for h in done {
            if h.join().is_err() {
                error!(addr = %label, "NBD connection thread panicked");
            }
        }
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                warn!(addr = %label, error = %e, "NBD accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let handle = match stream.try_clone() {
            Ok(h) => h,
            Err(e) => {
                warn!(addr = %label, error = %e, "cannot clone NBD connection socket");
                continue;
            }
        };
        lock(&shared.conns).insert(id, handle);
        let sh = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                run_connection(&sh, stream);
                lock(&sh.conns).remove(&id);
                sh.conns_changed.notify_all();
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                warn!(addr = %label, error = %e, "cannot start an NBD connection thread");
                lock(&shared.conns).remove(&id);
            }
        }
    }
    handles
}

fn run_connection(shared: &Shared, stream: Stream) {
    let export = &shared.export;
    let (read_half, closer) = match (stream.try_clone(), stream.try_clone()) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => {
            warn!(export = %export.name, error = %e, "cannot clone NBD connection socket");
            return;
        }
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
    let mut writer = stream;
    let neg = match negotiate(&mut reader, &mut writer, export, &shared.stopping) {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            debug!(export = %export.name, error = %e, "NBD handshake ended");
            return;
        }
    };
    let on_broken = move || {
        let _ = closer.shutdown(Shutdown::Both);
    };
    transmit::serve(
        &mut reader,
        writer,
        export,
        neg,
        WORKERS_PER_CONNECTION,
        &on_broken,
    );
}
