//! A minimal credential server (upstream `credentialConfig` http/uds protocol) over TCP or a
//! Unix socket, written with std only.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Seen {
    path: String,
    remote_url: String,
}

/// Answers `GET <path>?remote_url=…` with `{"traceId","success","data":{"auths":…}}`
/// (`success:false` when built with `auths = null`). Stops on drop.
pub struct CredServer {
    url: String,
    hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn serve(mut s: impl Read + Write, auths: &serde_json::Value, seen: &Mutex<Seen>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req).to_string();
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let u = reqwest::Url::parse(&format!("http://localhost{target}")).unwrap();
    {
        let mut g = seen.lock().unwrap();
        g.path = u.path().to_string();
        g.remote_url = u
            .query_pairs()
            .find(|(k, _)| k == "remote_url")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
    }
    let body = if auths.is_null() {
        serde_json::json!({"traceId": "trace-1", "success": false})
    } else {
        serde_json::json!({"traceId": "trace-1", "success": true, "data": {"auths": auths}})
    }
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

impl CredServer {
    fn spawn<S: Read + Write + Send + 'static>(
        url: String,
        auths: serde_json::Value,
        mut accept: impl FnMut() -> Option<S> + Send + 'static,
    ) -> CredServer {
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, sn, st) = (hits.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match accept() {
                    Some(conn) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        serve(conn, &auths, &sn);
                    }
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        CredServer {
            url,
            hits,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Serve on a Unix socket at `path`.
    pub fn unix(path: &Path, auths: serde_json::Value) -> CredServer {
        let l = std::os::unix::net::UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        Self::spawn(format!("unix:{}", path.display()), auths, move || {
            let (c, _) = l.accept().ok()?;
            c.set_nonblocking(false).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            Some(c)
        })
    }

    /// Serve over TCP on a free loopback port.
    pub fn tcp(auths: serde_json::Value) -> CredServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        Self::spawn(url, auths, move || {
            let (c, _) = l.accept().ok()?;
            c.set_nonblocking(false).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            Some(c)
        })
    }

    /// `http://127.0.0.1:PORT` (TCP) or `unix:<path>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Requests served.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// The `remote_url` of the last request (decoded).
    pub fn last_remote_url(&self) -> String {
        self.seen.lock().unwrap().remote_url.clone()
    }

    /// The path of the last request.
    pub fn last_path(&self) -> String {
        self.seen.lock().unwrap().path.clone()
    }
}

impl Drop for CredServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
