//! Real docker-registry instances: plain, htpasswd, token, TLS, shared storage, push helpers.

use std::time::{Duration, Instant};

use obd_testkit::{Auth, PushedLayer, RegistryOpts, RegistryServer, sha256_digest};
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;

fn start(opts: RegistryOpts) -> Option<RegistryServer> {
    match RegistryServer::start(opts) {
        Ok(r) => Some(r),
        Err(skip) => {
            eprintln!("SKIP: {skip}");
            None
        }
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v[..]);
    v
}

/// GET bytes=1000-1999 of a blob; returns (status, body).
fn range_get(client: &Client, url: &str, auth: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = client.get(url).header("Range", "bytes=1000-1999");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().unwrap().to_vec())
}

fn plain_client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

/// Push a blob and an image, then check a Range GET and the manifest.
fn push_and_check(reg: &RegistryServer, client: &Client, auth: Option<&str>) {
    let data = random_bytes(200_000, 7);
    let digest = reg.push_blob("test/raw", &data);
    assert_eq!(digest, sha256_digest(&data));
    let url = format!("{}/{digest}", reg.blob_url("test/raw"));
    let (status, body) = range_get(client, &url, auth);
    assert_eq!(status, 206, "{}", reg.log());
    assert_eq!(body, &data[1000..2000]);

    let layer = PushedLayer::new(
        &digest,
        data.len() as u64,
        "application/vnd.oci.image.layer.v1.tar",
    )
    .with_annotation("containerd.io/snapshot/overlaybd/blob-digest", &digest)
    .with_annotation(
        "containerd.io/snapshot/overlaybd/blob-size",
        data.len().to_string(),
    );
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mdigest = reg.push_image("test/raw", "v1", std::slice::from_ref(&layer), config);
    let mut req = client
        .get(format!("{}/v2/test/raw/manifests/v1", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let header_digest = resp.headers()["Docker-Content-Digest"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(header_digest, mdigest);
    let bytes = resp.bytes().unwrap();
    assert_eq!(sha256_digest(&bytes), mdigest);
    let m = oci_spec::image::ImageManifest::from_reader(&bytes[..]).unwrap();
    assert_eq!(m.layers().len(), 1);
    let l = &m.layers()[0];
    assert_eq!(l.digest().to_string(), digest);
    assert_eq!(l.size(), data.len() as u64);
    assert_eq!(l.media_type().to_string(), layer.media_type);
    let ann = l.annotations().clone().unwrap();
    assert_eq!(ann["containerd.io/snapshot/overlaybd/blob-digest"], digest);
    assert_eq!(m.config().digest().to_string(), sha256_digest(config));
}

#[test]
fn plain_registry_push_and_range_read() {
    let Some(reg) = start(RegistryOpts::default()) else {
        return;
    };
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    assert_eq!(reg.url(), format!("http://{}", reg.host()));
    assert_eq!(reg.blob_url("a/b"), format!("{}/v2/a/b/blobs", reg.url()));
    assert!(reg.credentials().is_none() && reg.ca_pem().is_none());
    push_and_check(&reg, &plain_client(), None);
    // HEAD gives the size.
    let data = random_bytes(5000, 9);
    let d = reg.push_blob("test/other", &data);
    let resp = plain_client()
        .head(format!("{}/{d}", reg.blob_url("test/other")))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-length"], "5000");
}

#[test]
fn basic_auth_rejects_bad_credentials() {
    let opts = RegistryOpts {
        auth: Auth::basic("alice", "s3cret"),
        ..Default::default()
    };
    let Some(reg) = start(opts) else { return };
    assert_eq!(reg.credentials(), Some(("alice".into(), "s3cret".into())));
    let dbg = format!("{reg:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    let client = plain_client();
    let data = random_bytes(3000, 1);
    let digest = reg.push_blob("test/basic", &data);
    let url = format!("{}/{digest}", reg.blob_url("test/basic"));
    let resp = client.get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let resp = client
        .get(&url)
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .get(&url)
        .basic_auth("alice", Some("s3cret"))
        .header("Range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().unwrap()[..], &data[1000..2000]);
    push_and_check(&reg, &client, Some(&basic_header("alice", "s3cret")));
}

fn basic_header(user: &str, pass: &str) -> String {
    // reqwest builds the header; reuse it instead of pulling in base64.
    let req = plain_client()
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(pass))
        .build()
        .unwrap();
    req.headers()["authorization"].to_str().unwrap().to_string()
}

/// Parses `Bearer realm="..",service="..",scope=".."`.
fn parse_bearer(challenge: &str) -> (String, String, String) {
    let rest = challenge.strip_prefix("Bearer ").expect(challenge);
    let mut realm = String::new();
    let mut service = String::new();
    let mut scope = String::new();
    for part in rest.split("\",") {
        let (k, v) = part.split_once('=').unwrap();
        let v = v.trim_matches('"').to_string();
        match k.trim() {
            "realm" => realm = v,
            "service" => service = v,
            "scope" => scope = v,
            _ => {}
        }
    }
    (realm, service, scope)
}

fn get_token(
    client: &Client,
    realm: &str,
    service: &str,
    scope: &str,
    creds: Option<(&str, &str)>,
) -> (u16, Option<String>) {
    let mut req = client
        .get(realm)
        .query(&[("service", service), ("scope", scope)]);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let v: serde_json::Value = resp.json().unwrap();
    assert!(v["expires_in"].as_u64().unwrap() >= 1);
    assert_eq!(v["token"], v["access_token"]);
    (status, v["token"].as_str().map(String::from))
}

#[test]
fn token_auth_flow_and_expiry() {
    let ttl = Duration::from_secs(2);
    let opts = RegistryOpts {
        auth: Auth::token("bob", "pw-bob", ttl),
        ..Default::default()
    };
    let Some(reg) = start(opts) else { return };
    let client = plain_client();
    let data = random_bytes(4000, 2);
    let digest = reg.push_blob("test/tok", &data);
    assert_eq!(
        reg.token_requests(),
        0,
        "push helper tokens are not counted"
    );
    assert!(reg.token_requests_total() >= 2);
    let url = format!("{}/{digest}", reg.blob_url("test/tok"));

    let resp = client.get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (realm, service, scope) =
        parse_bearer(resp.headers()["www-authenticate"].to_str().unwrap());
    assert_eq!(Some(realm.clone()), reg.token_realm());
    assert_eq!(scope, "repository:test/tok:pull");

    // Wrong password: the token server refuses.
    assert_eq!(
        get_token(&client, &realm, &service, &scope, Some(("bob", "nope"))).0,
        401
    );
    // Anonymous: a token without rights.
    let (st, anon) = get_token(&client, &realm, &service, &scope, None);
    assert_eq!(st, 200);
    let (status, _) = range_get(&client, &url, Some(&format!("Bearer {}", anon.unwrap())));
    assert_eq!(status, 401);
    // Right credentials.
    let (_, tok) = get_token(&client, &realm, &service, &scope, Some(("bob", "pw-bob")));
    let bearer = format!("Bearer {}", tok.unwrap());
    let issued = Instant::now();
    assert_eq!(reg.token_requests(), 2);
    let (status, body) = range_get(&client, &url, Some(&bearer));
    assert_eq!(status, 206, "{}", reg.log());
    assert_eq!(body, &data[1000..2000]);
    // POST password grant (containerd style).
    let resp = client
        .post(&realm)
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "pw-bob"),
            ("service", service.as_str()),
            ("scope", scope.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(reg.token_requests(), 3);
    let (status, _) = range_get(
        &client,
        &url,
        Some(&format!("Bearer {}", v["access_token"].as_str().unwrap())),
    );
    assert_eq!(status, 206);
    // Expiry: after ttl (+1 s of rounding) the first token is refused.
    let wait = (ttl + Duration::from_millis(1100)).saturating_sub(issued.elapsed());
    std::thread::sleep(wait);
    let (status, _) = range_get(&client, &url, Some(&bearer));
    assert_eq!(status, 401, "token still accepted after its ttl");
    push_and_check_token(&reg, &client);
}

fn push_and_check_token(reg: &RegistryServer, client: &Client) {
    let realm = reg.token_realm().unwrap();
    let (_, tok) = get_token(
        client,
        &realm,
        "obd-testkit-registry",
        "repository:test/raw:pull",
        Some(("bob", "pw-bob")),
    );
    push_and_check(reg, client, Some(&format!("Bearer {}", tok.unwrap())));
}

#[test]
fn tls_requires_trusting_the_ca() {
    let Some(reg) = start(RegistryOpts {
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reg.ca_pem().unwrap();
    let err = plain_client().get(format!("{}/v2/", reg.url())).send();
    assert!(err.is_err(), "an untrusting client must fail");
    let pem = std::fs::read(&ca).unwrap();
    let client = Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let resp = client.get(format!("{}/v2/", reg.url())).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // localhost is in the certificate too.
    let resp = client
        .get(format!("https://localhost:{}/v2/", reg.port()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    push_and_check(&reg, &client, None);
}

#[test]
fn tls_with_basic_auth() {
    let opts = RegistryOpts {
        auth: Auth::basic("u", "p"),
        tls: true,
        ..Default::default()
    };
    let Some(reg) = start(opts) else { return };
    let client = reg.blocking_client();
    assert_eq!(
        client
            .get(format!("{}/v2/", reg.url()))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    push_and_check(&reg, &client, Some(&basic_header("u", "p")));
}

#[test]
fn shared_storage_and_cleanup() {
    let Some(a) = start(RegistryOpts::default()) else {
        return;
    };
    let data = random_bytes(10_000, 3);
    let digest = a.push_blob("test/shared", &data);
    let opts = RegistryOpts {
        auth: Auth::basic("x", "y"),
        storage: Some(a.storage()),
        ..Default::default()
    };
    let Some(b) = start(opts) else { return };
    assert_ne!(a.port(), b.port());
    let url = format!("{}/{digest}", b.blob_url("test/shared"));
    let (status, body) = range_get(&plain_client(), &url, Some(&basic_header("x", "y")));
    assert_eq!(status, 206);
    assert_eq!(body, &data[1000..2000]);
    // Drop kills the process; the caller's storage stays.
    let pid = b.pid();
    let storage = b.storage();
    drop(b);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(storage.exists());
    let pid = a.pid();
    drop(a);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!storage.exists(), "own temp storage removed");
}

#[test]
fn push_blob_file_streams() {
    let Some(reg) = start(RegistryOpts::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let data = random_bytes(24 << 20, 4);
    std::fs::write(&path, &data).unwrap();
    let digest = reg.push_blob_file("test/big", &path);
    assert_eq!(digest, sha256_digest(&data));
    let resp = plain_client()
        .get(format!("{}/{digest}", reg.blob_url("test/big")))
        .header("Range", "bytes=20000000-20000999")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().unwrap()[..], &data[20_000_000..20_001_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usable_from_async_tests() {
    let Some(reg) = start(RegistryOpts::default()) else {
        return;
    };
    let d = reg.push_blob("test/async", b"hello async");
    assert_eq!(d, sha256_digest(b"hello async"));
    drop(reg);
}

/// 1 GiB through `push_blob_file` (slow: run with `--ignored`).
#[test]
#[ignore]
fn push_one_gib_file() {
    let Some(reg) = start(RegistryOpts::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gib");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let digest = reg.push_blob_file("test/gib", &path);
    let resp = plain_client()
        .head(format!("{}/{digest}", reg.blob_url("test/gib")))
        .send()
        .unwrap();
    assert_eq!(
        resp.headers()["content-length"],
        (1u64 << 30).to_string().as_str()
    );
}
