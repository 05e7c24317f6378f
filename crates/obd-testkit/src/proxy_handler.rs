//! The fault proxy's connection and request handling.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::{Body as _, Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

use crate::proxy::{Fault, Shared, bump};
use crate::proxy_body::{AbortableStream, ProxyBody};

type UpstreamClient = Client<HttpConnector, Incoming>;

pub(crate) async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("obd-testkit: FaultProxy listener: {e}");
            return;
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let client: UpstreamClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let abort = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(AbortableStream::new(stream, abort.clone()));
        let (shared, client) = (shared.clone(), client.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(req, shared.clone(), client.clone(), abort.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn simple(status: u16, extra: Option<(&str, String)>, msg: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(msg.clone()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    h.insert(hyper::header::CONTENT_LENGTH, msg.len().into());
    if let Some((name, value)) = extra
        && let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        )
    {
        h.insert(n, v);
    }
    resp
}

fn is_blob_path(path: &str) -> bool {
    path.starts_with("/v2/")
        && path
            .rsplit_once('/')
            .is_some_and(|(prefix, last)| prefix.ends_with("/blobs") && last.contains(':'))
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: UpstreamClient,
    abort: Arc<std::sync::atomic::AtomicBool>,
) -> io::Result<Response<ProxyBody>> {
    let c = &shared.counters;
    bump(&c.requests);
    let is_get = req.method() == hyper::Method::GET;
    let range_get = is_get && req.headers().contains_key(hyper::header::RANGE);
    if range_get {
        bump(&c.range_requests);
    }
    let path_q = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    if is_get && shared.redirect.load(Ordering::SeqCst) && is_blob_path(req.uri().path()) {
        bump(&c.redirects_sent);
        let target = format!("{}{path_q}", shared.upstream);
        return Ok(simple(
            307,
            Some(("location", target.clone())),
            format!("see {target}\n"),
        ));
    }
    let (fault, frac) = shared.draw(range_get);
    if let Fault::Status(code) = fault {
        bump(&c.faults_5xx);
        return Ok(simple(
            code,
            None,
            format!("fault proxy: injected {code}\n"),
        ));
    }
    if let Fault::Stall(d, false) = fault {
        bump(&c.faults_stall);
        tokio::time::sleep(d).await;
    }
    let is_head = req.method() == hyper::Method::HEAD;
    let (mut parts, body) = req.into_parts();
    let uri = format!("{}{path_q}", shared.upstream);
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(e) => {
            return Ok(simple(
                502,
                None,
                format!("fault proxy: bad URI {uri}: {e}\n"),
            ));
        }
    };
    parts.version = hyper::Version::HTTP_11;
    // hyper already answered any `Expect: 100-continue` towards the client.
    parts.headers.remove(hyper::header::EXPECT);
    let up = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(simple(
                502,
                None,
                format!("fault proxy: upstream {uri}: {e}\n"),
            ));
        }
    };
    let (parts, body) = up.into_parts();
    let len = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body = !is_head && body.size_hint().upper() != Some(0) && len != Some(0);
    let scaled = |n: u64| ((frac * n as f64) as u64).min(n.saturating_sub(1));
    // Faults that need a body with a known length are skipped (not counted) without one.
    let fault = match (fault, len, has_body) {
        (Fault::Reset(_), _, false) => {
            bump(&c.faults_reset);
            abort.store(true, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected reset",
            ));
        }
        (Fault::Reset(_), Some(n), true) => Fault::Reset(scaled(n)),
        (Fault::Reset(_), None, true) => Fault::Reset(0),
        (Fault::Truncate(_), Some(n), true) => Fault::Truncate(scaled(n)),
        (Fault::Flip(_, x), Some(n), true) => Fault::Flip(scaled(n), x),
        (Fault::Flip(_, x), None, true) => Fault::Flip(0, x),
        (Fault::Stall(d, true), Some(n), true) => Fault::Stall(d, n > 0),
        (Fault::Stall(..), ..) => Fault::None, // counted already (before headers) or no body
        (Fault::Truncate(_), ..) | (Fault::Flip(..), ..) => Fault::None,
        (f, ..) => f,
    };
    match fault {
        Fault::Reset(_) => bump(&c.faults_reset),
        Fault::Truncate(_) => bump(&c.faults_truncate),
        Fault::Flip(..) => bump(&c.faults_flip),
        Fault::Stall(_, true) => bump(&c.faults_stall),
        _ => {}
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(pump(
        body,
        tx,
        fault,
        len.unwrap_or(0),
        shared.clone(),
        abort,
    ));
    Ok(Response::from_parts(parts, ProxyBody::Channel(rx)))
}

/// Streams the upstream body to the client, applying `fault`.
async fn pump(
    mut body: Incoming,
    tx: mpsc::Sender<io::Result<Bytes>>,
    fault: Fault,
    len: u64,
    shared: Arc<Shared>,
    abort: Arc<AtomicBool>,
) {
    use http_body_util::BodyExt;
    let limit = match fault {
        Fault::Reset(k) | Fault::Truncate(k) => Some(k),
        Fault::Stall(_, true) => Some(len / 2),
        _ => None,
    };
    let mut sent = 0u64;
    let mut stalled = false;
    loop {
        let chunk = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => {
                let _ = tx
                    .send(Err(io::Error::other(format!("upstream body: {e}"))))
                    .await;
                return;
            }
            None => break,
        };
        let mut chunk = chunk.to_vec();
        if let Fault::Flip(pos, x) = fault
            && pos >= sent
            && pos < sent + chunk.len() as u64
            && let Some(b) = chunk.get_mut((pos - sent) as usize)
        {
            *b ^= x;
        }
        let mut rest = &chunk[..];
        if let Some(k) = limit.filter(|_| !stalled)
            && sent + rest.len() as u64 >= k
        {
            let head = &rest[..(k - sent) as usize];
            if !send(&tx, head, &shared).await {
                return;
            }
            sent = k;
            rest = &rest[head.len()..];
            // Let hyper flush what was sent before the fault hits.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match fault {
                Fault::Reset(_) => {
                    abort.store(true, Ordering::SeqCst);
                    let _ = tx.send(Err(io::Error::other("injected reset"))).await;
                    return;
                }
                Fault::Truncate(_) => return, // channel closes: short body, then FIN
                Fault::Stall(d, _) => {
                    tokio::time::sleep(d).await;
                    stalled = true;
                }
                _ => {}
            }
        }
        if !rest.is_empty() {
            if !send(&tx, rest, &shared).await {
                return;
            }
            sent += rest.len() as u64;
        }
    }
}

async fn send(tx: &mpsc::Sender<io::Result<Bytes>>, data: &[u8], shared: &Shared) -> bool {
    if data.is_empty() {
        return true;
    }
    shared
        .counters
        .bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    tx.send(Ok(Bytes::copy_from_slice(data))).await.is_ok()
}
