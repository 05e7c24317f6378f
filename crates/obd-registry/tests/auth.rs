//! Authentication against a real docker-registry: Basic (right, wrong, none), bearer tokens
//! with a short lifetime, credential file rotation, HTTP/UDS credential servers — and no
//! secret ever appears in logs or errors.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Forwarder, capture_logs, opts, random_bytes, write_cred_file};
use obd_core::{ErrorKind, ReadAt};
use obd_registry::{
    CredentialProvider, FileCredentials, HttpCredentials, HttpMode, Registry, RegistryOptions,
};
use obd_testkit::{Auth, RegistryOpts, RegistryServer};

use common::cred_server::CredServer;

const USER: &str = "obd-user";
const PASS: &str = "Pw-7f3a9c-secret";
const WRONG: &str = "Wrong-pw-55e1";

fn start(auth: Auth) -> Result<RegistryServer, obd_testkit::Skip> {
    RegistryServer::start(RegistryOpts {
        auth,
        tls: false,
        storage: None,
    })
}

fn with_provider(p: Arc<dyn CredentialProvider>) -> RegistryOptions {
    RegistryOptions {
        credentials: vec![p],
        ..opts()
    }
}

/// Every error message seen by the tests, checked for secrets at the end.
fn record(errors: &mut Vec<String>, e: &obd_core::Error) {
    errors.push(format!("{e} {e:?}"));
}

fn assert_no_secrets(errors: &[String]) {
    let logs = String::from_utf8_lossy(&capture_logs().lock().unwrap()).to_string();
    let b64 =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    let secrets = [
        PASS.to_string(),
        WRONG.to_string(),
        b64(USER, PASS),
        b64(USER, WRONG),
        // Every JWT issued by the token server starts with this (`{"typ":"JWT"...`).
        "eyJ".to_string(),
    ];
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "secret {s:?} found in the logs");
        for e in errors {
            assert!(!e.contains(s.as_str()), "secret {s:?} found in error: {e}");
        }
    }
    assert!(
        logs.len() > 1000,
        "log capture is not working ({} bytes)",
        logs.len()
    );
}

#[test]
fn basic_auth_matrix_and_file_rotation() {
    capture_logs();
    let reg = skip_on_err!(start(Auth::basic(USER, PASS)));
    let data = random_bytes(2 << 20, 11);
    let digest = reg.push_blob("ns/basic", &data);
    let url = reg.blob_url("ns/basic");
    let mut errors = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("cred.json");
    // Right credentials (key: host/ns, longest prefix).
    write_cred_file(&cred, &format!("{}/ns", reg.host()), USER, PASS);
    let r = Registry::new(with_provider(Arc::new(FileCredentials::new(cred.clone())))).unwrap();
    let f = r.open_blob(&url, &digest, None).unwrap();
    assert!(f.read_vec(1000, 70_000).unwrap() == data[1000..71_000]);
    // No credentials at all.
    let e = Registry::new(opts())
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("requires credentials"), "{e}");
    // Wrong password: PermissionDenied naming host, repository and user.
    write_cred_file(&cred, &reg.host(), USER, WRONG);
    let r = Registry::new(with_provider(Arc::new(FileCredentials::new(cred.clone())))).unwrap();
    let f = r.open_blob(&url, &digest, Some(data.len() as u64)).unwrap();
    let t = Instant::now();
    let e = f.read_vec(0, 100).unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("rejected") && msg.contains(&reg.host()) && msg.contains("ns/basic"),
        "{msg}"
    );
    assert!(msg.contains(USER), "{msg}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "auth failures are not retried"
    );
    // Rotation without restart: the file is fixed while the blob stays open.
    write_cred_file(&cred, &reg.host(), USER, PASS);
    assert!(f.read_vec(5, 100).unwrap() == data[5..105]);
    // A reader keeps reading while the file is rewritten (same password, new inode).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (f, data, stop) = (f.clone(), data.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let off = (n * 4099) % (data.len() - 8192);
                assert!(f.read_vec(off as u64, 8192).unwrap() == data[off..off + 8192]);
                n += 1;
            }
            n
        })
    };
    for _ in 0..5 {
        write_cred_file(&cred, &reg.host(), USER, PASS);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    // A malformed file: the error names the file and the JSON path.
    std::fs::write(&cred, r#"{"auths":{"x":{"auth":5}}}"#).unwrap();
    let r = Registry::new(with_provider(Arc::new(FileCredentials::new(cred.clone())))).unwrap();
    let e = r.open_blob(&url, &digest, None).unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert!(
        e.to_string().contains("cred.json") && e.to_string().contains(r#"$.auths["x"].auth"#),
        "{e}"
    );
    assert_no_secrets(&errors);
}

#[test]
fn bearer_tokens_refresh_and_rotation() {
    capture_logs();
    let reg = skip_on_err!(start(Auth::token(USER, PASS, Duration::from_secs(2))));
    let data = random_bytes(1 << 20, 12);
    let digest = reg.push_blob("ns/token", &data);
    let url = reg.blob_url("ns/token");
    let mut errors = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("cred.json");
    write_cred_file(&cred, &reg.host(), USER, PASS);
    let r = Registry::new(with_provider(Arc::new(FileCredentials::new(cred.clone())))).unwrap();
    let f = r.open_blob(&url, &digest, None).unwrap();
    assert_eq!(f.size(), data.len() as u64);
    // Read for more than 5 s with 2 s tokens.
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_millis(5500) {
        let off = (i * 7919) % (data.len() - 4096);
        assert!(f.read_vec(off as u64, 4096).unwrap() == data[off..off + 4096]);
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let issued = reg.token_requests();
    assert!(issued >= 3, "tokens issued: {issued}");
    // Anonymous: the token server gives a token without pull rights; the registry refuses.
    let e = Registry::new(opts())
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("anonymous"), "{e}");
    // Rotation to a wrong password: the next token fetch (after expiry) uses it and fails.
    write_cred_file(&cred, &reg.host(), USER, WRONG);
    std::thread::sleep(Duration::from_millis(2100));
    let e = f.read_vec(0, 10).unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains("rejected") && e.to_string().contains(USER),
        "{e}"
    );
    // And back.
    write_cred_file(&cred, &reg.host(), USER, PASS);
    assert!(f.read_vec(0, 10).unwrap() == data[..10]);
    // Wrong credentials from the start.
    write_cred_file(&cred, &reg.host(), USER, WRONG);
    let r = Registry::new(with_provider(Arc::new(FileCredentials::new(cred.clone())))).unwrap();
    let e = r.open_blob(&url, &digest, None).unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        e.to_string().contains("ns/token") && e.to_string().contains(&reg.host()),
        "{e}"
    );
    assert_no_secrets(&errors);
}

#[test]
fn http_and_uds_credential_servers() {
    capture_logs();
    let reg = skip_on_err!(start(Auth::basic(USER, PASS)));
    let data = random_bytes(100_000, 13);
    let digest = reg.push_blob("ns/srv", &data);
    let url = reg.blob_url("ns/srv");
    let mut errors = Vec::new();
    let auths = serde_json::json!({
        reg.host(): { "username": USER, "password": WRONG },
        format!("{}/ns/srv", reg.host()): { "username": USER, "password": PASS },
    });
    let dir = tempfile::tempdir().unwrap();
    // Over a Unix socket.
    let sock = dir.path().join("cred.sock");
    let uds = CredServer::unix(&sock, auths.clone());
    let p = HttpCredentials::new(
        HttpMode::Uds,
        sock.display().to_string(),
        Duration::from_secs(2),
        None,
        None,
    );
    let f = Registry::new(with_provider(Arc::new(p)))
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap();
    assert!(f.read_vec(10, 1000).unwrap() == data[10..1010]);
    assert!(uds.hits() >= 1);
    assert_eq!(uds.last_remote_url(), format!("{url}/{digest}"));
    // Over HTTP.
    let http = CredServer::tcp(auths.clone());
    let p = HttpCredentials::new(
        HttpMode::Http,
        format!("{}/creds", http.url()),
        Duration::from_secs(2),
        None,
        None,
    );
    let f = Registry::new(with_provider(Arc::new(p)))
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap();
    assert!(f.read_vec(0, 1000).unwrap() == data[..1000]);
    assert!(http.hits() >= 1);
    assert_eq!(http.last_path(), "/creds");
    // A server that answers success=false: the error says so (and no secrets).
    let failing = CredServer::tcp(serde_json::Value::Null);
    let p = HttpCredentials::new(
        HttpMode::Http,
        failing.url(),
        Duration::from_secs(2),
        None,
        None,
    );
    let e = Registry::new(with_provider(Arc::new(p)))
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap_err();
    eprintln!("error: {e}");
    record(&mut errors, &e);
    assert!(e.to_string().contains("success=false"), "{e}");
    // Providers are consulted in order: an empty file first, then the server.
    let empty = dir.path().join("none.json");
    let p = HttpCredentials::new(
        HttpMode::Uds,
        sock.display().to_string(),
        Duration::from_secs(2),
        None,
        None,
    );
    let o = RegistryOptions {
        credentials: vec![Arc::new(FileCredentials::new(empty)), Arc::new(p)],
        ..opts()
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&url, &digest, None)
        .unwrap();
    assert!(f.read_vec(0, 10).unwrap() == data[..10]);
    assert_no_secrets(&errors);
}

#[test]
fn revoked_token_is_refreshed_once_without_using_a_retry() {
    capture_logs();
    let reg = skip_on_err!(start(Auth::token(USER, PASS, Duration::from_secs(60))));
    let data = random_bytes(100_000, 14);
    let digest = reg.push_blob("ns/revoke", &data);
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("cred.json");
    write_cred_file(&cred, &reg.host(), USER, PASS);
    // Through a forwarder that drops the token of its 3rd request: 1 = anonymous probe
    // (401), 2 = probe with a token, 3 = first read, answered 401 as if revoked.
    let fwd = Forwarder::start_with("p2p", false, Some(3));
    let o = RegistryOptions {
        retries: 0,
        p2p_prefix: Some(fwd.url()),
        ..with_provider(Arc::new(FileCredentials::new(cred)))
    };
    let f = Registry::new(o)
        .unwrap()
        .open_blob(&reg.blob_url("ns/revoke"), &digest, None)
        .unwrap();
    assert!(f.uses_p2p());
    assert_eq!(reg.token_requests(), 1);
    assert!(f.read_vec(500, 5000).unwrap() == data[500..5500]);
    assert_eq!(fwd.hits(), 4);
    assert_eq!(
        reg.token_requests(),
        2,
        "a new token was fetched after the 401"
    );
    assert!(f.read_vec(0, 10).unwrap() == data[..10]);
    assert_eq!(reg.token_requests(), 2);
}
