//! A TCP delay line: every chunk is forwarded `one_way` after it was read, in order, so the
//! round trip grows by 2 x `one_way` while throughput stays unlimited.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::rt::OwnedRuntime;

/// A running delay line (stopped on drop).
pub struct DelayLine {
    addr: SocketAddr,
    target: String,
    _rt: OwnedRuntime,
}

impl std::fmt::Debug for DelayLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayLine")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl DelayLine {
    /// Listens on `listen` (e.g. `"127.0.0.1:0"`) and forwards each connection to `target`
    /// (`host:port`), delaying both directions by `one_way`. Panics when `listen` cannot be
    /// bound.
    pub fn start(listen: &str, target: &str, one_way: Duration) -> DelayLine {
        let listener = std::net::TcpListener::bind(listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .unwrap_or_else(|e| panic!("obd-testkit: DelayLine cannot bind {listen}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("obd-testkit: DelayLine local_addr: {e}"));
        let rt = OwnedRuntime::new("delay-line");
        let tgt = target.to_string();
        rt.handle().spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("obd-testkit: DelayLine listener: {e}");
                    return;
                }
            };
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(connection(client, tgt.clone(), one_way));
            }
        });
        DelayLine {
            addr,
            target: target.to_string(),
            _rt: rt,
        }
    }

    /// The listening address, `host:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn connection(client: TcpStream, target: String, delay: Duration) {
    let server =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target)).await {
            Ok(Ok(s)) => s,
            _ => return, // dropping `client` closes it
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pipe(cr, sw, delay));
    let down = tokio::spawn(pipe(sr, cw, delay));
    let _ = up.await;
    let _ = down.await;
}

/// Reads chunks as fast as they come; a writer task sends each one when it is due.
/// EOF is forwarded (as a write shutdown) after the same delay.
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match data {
                Some(d) => {
                    if w.write_all(&d).await.is_err() {
                        return;
                    }
                }
                None => break,
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap_or(0);
        let data = (n > 0).then(|| buf[..n].to_vec());
        let eof = data.is_none();
        if tx.send((Instant::now() + delay, data)).is_err() || eof {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
