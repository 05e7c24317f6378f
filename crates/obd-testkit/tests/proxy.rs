//! FaultProxy and DelayLine against a real registry, observed with plain clients.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use obd_testkit::{
    Auth, DelayLine, FaultProxy, Faults, RegistryOpts, RegistryServer, sha256_digest,
};
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;

const LEN: usize = 300_000;

fn setup() -> Option<(RegistryServer, Vec<u8>, String)> {
    let reg = match RegistryServer::start(RegistryOpts::default()) {
        Ok(r) => r,
        Err(skip) => {
            eprintln!("SKIP: {skip}");
            return None;
        }
    };
    let mut data = vec![0u8; LEN];
    rand::rngs::StdRng::seed_from_u64(11).fill(&mut data[..]);
    let digest = reg.push_blob("test/proxy", &data);
    Some((reg, data, digest))
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Raw {
    status: u16,
    headers: String,
    body: Vec<u8>,
    /// How reading the body ended.
    end: io::Result<()>,
}

impl Raw {
    fn content_length(&self) -> usize {
        self.headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap()
    }
}

/// One request on a fresh connection with `Connection: close`; reads until EOF or error.
fn raw(host: &str, method: &str, path: &str, range: Option<&str>) -> Raw {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(r) = range {
        req.push_str(&format!("Range: bytes={r}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let split = all.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(split) = split else {
        return Raw {
            status: 0,
            headers: String::new(),
            body: Vec::new(),
            end,
        };
    };
    let headers = String::from_utf8_lossy(&all[..split]).to_string();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    Raw {
        status,
        headers,
        body: all[split + 4..].to_vec(),
        end,
    }
}

#[test]
fn passthrough_get_head_range_and_push() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    assert_eq!(proxy.url(), format!("http://{}", proxy.host()));
    let c = client();
    let url = format!("{}/{digest}", proxy.blob_url("test/proxy"));
    let resp = c
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 1000-1999/{LEN}").as_str()
    );
    assert_eq!(&resp.bytes().unwrap()[..], &data[1000..2000]);
    let resp = c.head(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-length"], LEN.to_string().as_str());
    assert_eq!(&c.get(&url).send().unwrap().bytes().unwrap()[..], &data[..]);

    // A chunked push (POST, PATCH, PUT) through the proxy; Location points at the proxy.
    let blob = b"pushed through the proxy".repeat(1000);
    let d = sha256_digest(&blob);
    let resp = c
        .post(format!("{}/uploads/", proxy.blob_url("test/pushed")))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains(&proxy.host()), "{loc}");
    let resp = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = c.put(format!("{loc}{sep}digest={d}")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let got = c
        .get(format!("{}/{d}", reg.blob_url("test/pushed")))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&got[..], &blob[..]);
    let st = proxy.stats();
    assert!(
        st.requests == 6 && st.range_requests == 1 && st.faults() == 0,
        "{st:?}"
    );
    assert!(st.bytes >= (LEN + 1000) as u64, "{st:?}");
}

#[test]
fn auth_headers_pass_through() {
    let opts = RegistryOpts {
        auth: Auth::basic("pu", "pp"),
        ..Default::default()
    };
    let reg = match RegistryServer::start(opts) {
        Ok(r) => r,
        Err(s) => return eprintln!("SKIP: {s}"),
    };
    let digest = reg.push_blob("test/a", &[7u8; 5000]);
    let proxy = FaultProxy::start(&reg.url());
    let url = format!("{}/{digest}", proxy.blob_url("test/a"));
    let resp = client().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let resp = client()
        .get(&url)
        .basic_auth("pu", Some("pp"))
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().unwrap()[..], &[7u8; 10]);
}

#[test]
fn fault_5xx_and_only_ranges() {
    let Some((reg, _data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let path = format!("/v2/test/proxy/blobs/{digest}");
    proxy.set_faults(Faults {
        p_5xx: 1.0,
        ..Default::default()
    });
    let r = raw(&proxy.host(), "GET", &path, Some("0-99"));
    assert!([500, 502, 503].contains(&r.status), "{}", r.headers);
    assert_eq!(proxy.stats().faults_5xx, 1);
    proxy.set_faults(Faults {
        p_5xx: 1.0,
        only_ranges: true,
        ..Default::default()
    });
    assert_eq!(raw(&proxy.host(), "HEAD", &path, None).status, 200);
    assert_eq!(raw(&proxy.host(), "GET", &path, None).status, 200);
    assert!(raw(&proxy.host(), "GET", &path, Some("0-99")).status >= 500);
    assert_eq!(proxy.stats().faults_5xx, 2);
    // Same seed, same sequence.
    let seq = |seed| {
        proxy.set_faults(Faults {
            p_5xx: 0.5,
            seed,
            ..Default::default()
        });
        (0..16)
            .map(|_| raw(&proxy.host(), "GET", &path, Some("0-9")).status)
            .collect::<Vec<_>>()
    };
    let a = seq(42);
    assert!(a.contains(&206) && a.iter().any(|s| *s >= 500), "{a:?}");
    assert_eq!(a, seq(42));
}

#[test]
fn fault_reset() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let path = format!("/v2/test/proxy/blobs/{digest}");
    proxy.set_faults(Faults {
        p_reset: 1.0,
        seed: 3,
        ..Default::default()
    });
    let r = raw(&proxy.host(), "GET", &path, None);
    let err = r.end.expect_err("a reset must surface as a read error");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(r.body.len() < LEN);
    assert_eq!(&r.body[..], &data[..r.body.len()]);
    // HEAD has no body: the connection is reset before any response.
    let r = raw(&proxy.host(), "HEAD", &path, None);
    assert_eq!(r.status, 0);
    assert_eq!(r.end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(proxy.stats().faults_reset, 2);
    // reqwest sees an error too.
    assert!(
        client()
            .get(format!("{}{path}", proxy.url()))
            .send()
            .and_then(|r| r.bytes())
            .is_err()
    );
}

#[test]
fn fault_truncate() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let path = format!("/v2/test/proxy/blobs/{digest}");
    proxy.set_faults(Faults {
        p_truncate: 1.0,
        seed: 5,
        ..Default::default()
    });
    let r = raw(&proxy.host(), "GET", &path, None);
    r.end.as_ref().expect("truncation ends with a clean EOF");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), LEN);
    assert!(r.body.len() < LEN, "{}", r.body.len());
    assert_eq!(&r.body[..], &data[..r.body.len()]);
    let r = raw(&proxy.host(), "GET", &path, Some("1000-1999"));
    assert_eq!((r.status, r.content_length()), (206, 1000));
    assert!(r.body.len() < 1000);
    assert_eq!(&r.body[..], &data[1000..1000 + r.body.len()]);
    assert_eq!(proxy.stats().faults_truncate, 2);
}

#[test]
fn fault_stall() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let url = format!("{}/{digest}", proxy.blob_url("test/proxy"));
    let stall = Duration::from_millis(1500);
    proxy.set_faults(Faults {
        p_stall: 1.0,
        stall,
        ..Default::default()
    });
    let quick = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    assert!(
        quick
            .get(&url)
            .header("Range", "bytes=0-99")
            .send()
            .is_err(),
        "must time out"
    );
    let t = Instant::now();
    let resp = client()
        .get(&url)
        .header("Range", "bytes=0-99")
        .send()
        .unwrap();
    assert!(t.elapsed() >= stall, "{:?}", t.elapsed());
    assert_eq!(&resp.bytes().unwrap()[..], &data[..100]);
    // Mid-body: headers arrive at once, the body late.
    proxy.set_faults(Faults {
        p_stall: 1.0,
        stall,
        stall_mid_body: true,
        ..Default::default()
    });
    let t = Instant::now();
    let resp = client().get(&url).send().unwrap();
    assert!(t.elapsed() < stall, "{:?}", t.elapsed());
    assert_eq!(&resp.bytes().unwrap()[..], &data[..]);
    assert!(t.elapsed() >= stall);
    assert_eq!(proxy.stats().faults_stall, 3);
}

#[test]
fn fault_flip() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let url = format!("{}/{digest}", proxy.blob_url("test/proxy"));
    proxy.set_faults(Faults {
        p_flip: 1.0,
        seed: 9,
        ..Default::default()
    });
    for range in [None, Some("5000-104999")] {
        let mut req = client().get(&url);
        if let Some(r) = range {
            req = req.header("Range", format!("bytes={r}"));
        }
        let got = req.send().unwrap().bytes().unwrap();
        let want = if range.is_some() {
            &data[5000..105000]
        } else {
            &data[..]
        };
        assert_eq!(got.len(), want.len());
        let diffs = got.iter().zip(want).filter(|(a, b)| a != b).count();
        assert_eq!(diffs, 1);
    }
    assert_eq!(proxy.stats().faults_flip, 2);
    proxy.set_faults(Faults::default());
    assert_eq!(
        &client().get(&url).send().unwrap().bytes().unwrap()[..],
        &data[..]
    );
}

#[test]
fn redirect_mode() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    proxy.set_redirect(true);
    let url = format!("{}/{digest}", proxy.blob_url("test/proxy"));
    let no_follow = Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(&url)
        .header("Range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc, format!("{}/{digest}", reg.blob_url("test/proxy")));
    let resp = no_follow
        .get(&loc)
        .header("Range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().unwrap()[..], &data[..10]);
    // A following client gets the data; HEAD is not redirected.
    let got = client()
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&got[..], &data[100..200]);
    assert_eq!(no_follow.head(&url).send().unwrap().status().as_u16(), 200);
    assert_eq!(proxy.stats().redirects_sent, 2);
    proxy.set_redirect(false);
    assert_eq!(no_follow.get(&url).send().unwrap().status().as_u16(), 200);
}

#[test]
fn delay_line_adds_latency() {
    let Some((reg, data, digest)) = setup() else {
        return;
    };
    let one_way = Duration::from_millis(60);
    let dl = DelayLine::start("127.0.0.1:0", &reg.host(), one_way);
    let c = client();
    let url = format!("{}/v2/test/proxy/blobs/{digest}", dl.url());
    let t = Instant::now();
    let resp = c
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(&resp.bytes().unwrap()[..], &data[1000..2000]);
    // connect + request/response: at least one round trip of 2 x one_way.
    assert!(t.elapsed() >= one_way * 2, "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(&c.get(&url).send().unwrap().bytes().unwrap()[..], &data[..]);
    assert!(t.elapsed() >= one_way * 2);
    drop(dl);
}

#[test]
fn drop_stops_proxy() {
    let Some((reg, _data, _digest)) = setup() else {
        return;
    };
    let proxy = FaultProxy::start(&reg.url());
    let host = proxy.host();
    assert_eq!(raw(&host, "GET", "/v2/", None).status, 200);
    drop(proxy);
    assert!(TcpStream::connect(&host).is_err());
    let dl = DelayLine::start("127.0.0.1:0", &reg.host(), Duration::from_millis(1));
    let addr = dl.addr();
    drop(dl);
    assert!(TcpStream::connect(&addr).is_err());
}
