//! The transmission phase: one reader decodes requests, a few workers run them on the
//! device and send the replies (possibly out of order, each tagged with its cookie).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use obd_core::{BlockDevice, ErrorKind, Result};
use tracing::{debug, warn};

use crate::negotiate::{Export, Negotiated, skip};
use crate::proto::{
    self, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, Command, MAX_PAYLOAD, REQUEST_LEN, Request,
    SIMPLE_REPLY_LEN,
};

/// Payload bytes (read buffers and write data) one connection may hold at once. A single
/// request of up to [`MAX_PAYLOAD`] bytes is always admitted.
const INFLIGHT_BYTES: u64 = 2 * MAX_PAYLOAD as u64;
/// Largest zero buffer used to write zeroes.
const ZERO_CHUNK: u64 = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A counting limit on in-flight payload bytes.
struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    fn acquire(&self, n: u64) {
        let mut used = lock(&self.used);
        while *used > 0 && *used + n > INFLIGHT_BYTES {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += n;
    }

    fn release(&self, n: u64) {
        *lock(&self.used) -= n;
        self.freed.notify_all();
    }
}

/// A request handed to a worker, with its write data.
struct Job {
    req: Request,
    payload: Vec<u8>,
    cost: u64,
}

/// State shared by the reader and the workers of one connection.
struct Conn<'a, W> {
    export: &'a Export,
    writer: Mutex<W>,
    broken: AtomicBool,
    budget: Budget,
    on_broken: &'a (dyn Fn() + Sync),
}

impl<W: Write> Conn<'_, W> {
    /// Send one whole reply; on failure mark the connection broken and wake the reader.
    fn send(&self, bytes: &[u8]) {
        if self.broken.load(Ordering::Acquire) {
            return;
        }
        let mut w = lock(&self.writer);
        if let Err(e) = w.write_all(bytes).and_then(|()| w.flush()) {
            drop(w);
            debug!(export = %self.export.name, error = %e, "NBD reply failed; closing");
            self.broken.store(true, Ordering::Release);
            (self.on_broken)();
        }
    }
}

/// Serve requests from `reader` until the client disconnects (`NBD_CMD_DISC` or end of
/// stream), breaks the protocol, or the stream fails; replies go to `writer`. Requests
/// already read are finished and answered before this returns. `on_broken` is called when
/// a reply cannot be sent, and must make `reader` return (e.g. shut the socket down).
pub(crate) fn serve<R: Read, W: Write + Send>(
    reader: &mut R,
    writer: W,
    export: &Export,
    neg: Negotiated,
    workers: usize,
    on_broken: &(dyn Fn() + Sync),
) {
    let conn = Conn {
        export,
        writer: Mutex::new(writer),
        broken: AtomicBool::new(false),
        budget: Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
        },
        on_broken,
    };
    let workers = workers.max(1);
    let (tx, rx) = sync_channel::<Job>(workers * 4);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let mut started = 0;
        for _ in 0..workers {
            let spawned = std::thread::Builder::new()
                .name("nbd-worker".into())
                .spawn_scoped(s, || work(&conn, &rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    warn!(export = %export.name, error = %e, "cannot start an NBD worker thread")
                }
            }
        }
        // Without workers, the reader runs every request itself.
        let tx = (started > 0).then_some(tx);
        if let Err(e) = read_requests(reader, &conn, neg, tx.as_ref()) {
            debug!(export = %export.name, error = %e, "NBD connection ended");
        }
        // Dropping the sender lets the workers finish the queue and stop.
        drop(tx);
    });
}

/// The reader loop. Returns `Ok` on a clean disconnect.
fn read_requests<R: Read, W: Write>(
    reader: &mut R,
    conn: &Conn<'_, W>,
    neg: Negotiated,
    tx: Option<&SyncSender<Job>>,
) -> io::Result<()> {
    let name = &conn.export.name;
    loop {
        if conn.broken.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut hdr = [0u8; REQUEST_LEN];
        if let Err(e) = reader.read_exact(&mut hdr) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                debug!(export = %name, "NBD client closed the connection without NBD_CMD_DISC");
                return Ok(());
            }
            return Err(e);
        }
        let req = match proto::decode_request(&hdr) {
            Ok(r) => r,
            Err(e) => {
                warn!(export = %name, error = %e, "NBD protocol error; disconnecting");
                return Ok(());
            }
        };
        if req.command == Command::Disc {
            debug!(export = %name, "NBD client disconnected (DISC)");
            return Ok(());
        }
        if let Err(rej) = proto::check_request(&req, neg.size, neg.flags) {
            if rej.fatal {
                warn!(export = %name, reason = %rej.reason, "NBD request cannot be answered; disconnecting");
                return Ok(());
            }
            debug!(export = %name, command = ?req.command, offset = req.offset,
                length = req.length, reason = %rej.reason, "NBD request refused");
            skip(reader, u64::from(req.payload_len()))?;
            conn.send(&proto::encode_simple_reply(rej.errno, req.cookie));
            continue;
        }
        let cost = match req.command {
            Command::Read | Command::Write => u64::from(req.length),
            _ => 0,
        };
        conn.budget.acquire(cost);
        let mut payload = Vec::new();
        if req.command == Command::Write {
            payload.resize(req.length as usize, 0);
            if let Err(e) = reader.read_exact(&mut payload) {
                conn.budget.release(cost);
                return Err(e);
            }
        }
        let job = Job { req, payload, cost };
        match tx {
            Some(tx) => {
                if let Err(err) = tx.send(job) {
                    // Every worker is gone (they only stop when the sender drops): run here.
                    run_job(conn, err.0);
                }
            }
            None => run_job(conn, job),
        }
    }
}

fn work<W: Write>(conn: &Conn<'_, W>, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match lock(rx).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        run_job(conn, job);
    }
}

fn run_job<W: Write>(conn: &Conn<'_, W>, job: Job) {
    let Job { req, payload, cost } = job;
    let export = conn.export;
    let dev = &*export.dev;
    let result = if req.command == Command::Read {
        if conn.broken.load(Ordering::Acquire) {
            conn.budget.release(cost);
            return;
        }
        let mut buf = vec![0u8; SIMPLE_REPLY_LEN + req.length as usize];
        match dev.read_exact_at(&mut buf[SIMPLE_REPLY_LEN..], req.offset) {
            Ok(()) => {
                buf[..SIMPLE_REPLY_LEN].copy_from_slice(&proto::encode_simple_reply(0, req.cookie));
                conn.send(&buf);
                conn.budget.release(cost);
                return;
            }
            Err(e) => Err(e),
        }
    } else {
        let r = execute(dev, &req, &payload);
        drop(payload);
        r
    };
    let errno = match result {
        Ok(()) => 0,
        Err(e) => {
            warn!(export = %export.name, command = ?req.command, offset = req.offset,
                length = req.length, error = %e, "NBD request failed on the device");
            proto::nbd_errno(e.errno())
        }
    };
    conn.send(&proto::encode_simple_reply(errno, req.cookie));
    conn.budget.release(cost);
}

/// Run a non-read request on the device.
fn execute(dev: &dyn BlockDevice, req: &Request, payload: &[u8]) -> Result<()> {
    let (off, len) = (req.offset, u64::from(req.length));
    match req.command {
        Command::Write => dev.write_at(payload, off)?,
        Command::Flush => return dev.flush(),
        Command::Trim => match dev.discard(off, len) {
            // Trim is a hint: a device that cannot discard may ignore it.
            Err(e) if e.kind() == ErrorKind::Unsupported => {}
            r => r?,
        },
        Command::WriteZeroes => write_zeroes(dev, off, len, req.flags & CMD_FLAG_NO_HOLE != 0)?,
        // Reads are run by the caller; the rest is refused by check_request.
        Command::Read
        | Command::Disc
        | Command::Cache
        | Command::BlockStatus
        | Command::Unknown(_) => {}
    }
    if req.flags & CMD_FLAG_FUA != 0 {
        dev.flush()?;
    }
    Ok(())
}

/// Zero `[off, off + len)`: by discarding (devices read discarded ranges as zeros) unless
/// the client asked for no hole or the device cannot discard; else by writing zeros.
fn write_zeroes(dev: &dyn BlockDevice, off: u64, len: u64, no_hole: bool) -> Result<()> {
    if !no_hole {
        match dev.discard(off, len) {
            Err(e) if e.kind() == ErrorKind::Unsupported => {}
            r => return r,
        }
    }
    let zeros = vec![0u8; len.min(ZERO_CHUNK) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK) as usize;
        dev.write_at(&zeros[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}
