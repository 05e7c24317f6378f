use super::*;
use base64::engine::general_purpose::STANDARD;

const URL: &str = "https://reg.io:5000/v2/ns/app/blobs/sha256:abcd";

fn cred(u: &str, p: &str) -> Credential {
    Credential {
        username: u.into(),
        password: p.into(),
    }
}

fn auths(json: &str) -> Result<Auths> {
    parse_file(json.as_bytes(), Path::new("/etc/cred.json"))
}

#[test]
fn prefixes_skip_v2_and_blobs() {
    assert_eq!(
        url_prefixes(URL),
        ["reg.io:5000", "reg.io:5000/ns", "reg.io:5000/ns/app"]
    );
    assert_eq!(
        url_prefixes("http://Reg.IO/v2/a/b/c/blobs"),
        ["reg.io", "reg.io/a", "reg.io/a/b", "reg.io/a/b/c"]
    );
    assert!(url_prefixes("nonsense").is_empty());
}

#[test]
fn key_normalisation() {
    assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
    assert_eq!(normalize_key("HTTPS://Reg.io:5000/"), "reg.io:5000");
    assert_eq!(
        normalize_key("reg.io:5000/v2/ns/app/"),
        "reg.io:5000/ns/app"
    );
    assert_eq!(normalize_key("reg.io/ns/app"), "reg.io/ns/app");
    assert_eq!(
        url_prefixes("https://registry-1.docker.io/v2/library/busybox/blobs/sha256:00"),
        [
            "docker.io",
            "docker.io/library",
            "docker.io/library/busybox"
        ]
    );
}

#[test]
fn longest_prefix_wins_not_json_order() {
    // Upstream would take "reg.io:5000" (first in JSON order); the repo entry is more
    // specific and wins here. serde_json sorts keys, so test both textual orders.
    for json in [
        r#"{"auths":{"reg.io:5000":{"username":"host","password":"h"},
                     "reg.io:5000/ns/app":{"username":"repo","password":"r"},
                     "reg.io:5000/ns":{"username":"ns","password":"n"}}}"#,
        r#"{"auths":{"reg.io:5000/ns/app":{"username":"repo","password":"r"},
                     "reg.io:5000":{"username":"host","password":"h"}}}"#,
    ] {
        let a = auths(json).unwrap();
        assert_eq!(a.lookup(URL), Some(cred("repo", "r")));
        assert_eq!(
            a.lookup("https://reg.io:5000/v2/other/blobs/sha256:1"),
            Some(cred("host", "h"))
        );
        assert_eq!(a.lookup("https://reg.io/v2/ns/app/blobs/sha256:1"), None);
    }
    // A key that is a string prefix but not a path prefix does not match.
    let a = auths(r#"{"auths":{"reg.io:5000/ns/ap":{"username":"x","password":"y"}}}"#).unwrap();
    assert_eq!(a.lookup(URL), None);
}

#[test]
fn docker_config_formats() {
    let b64 = STANDARD.encode("alice:pa:ss");
    let json = format!(
        r#"{{"auths":{{"https://reg.io:5000/v1/":{{"auth":"{b64}"}},
                       "ghcr.io":{{}},
                       "quay.io":{{"identitytoken":"xyz"}}}},
             "credsStore":"desktop","HttpHeaders":{{"X":"y"}}}}"#
    );
    let a = auths(&json).unwrap();
    assert_eq!(a.lookup(URL), Some(cred("alice", "pa:ss")));
    assert_eq!(a.lookup("https://ghcr.io/v2/x/blobs/sha256:1"), None);
    // No "auths" at all: fine, nothing matches.
    assert!(
        auths(r#"{"credsStore":"pass"}"#)
            .unwrap()
            .lookup(URL)
            .is_none()
    );
    // Unpadded base64 is accepted.
    let unpadded = STANDARD.encode("bob:pw").trim_end_matches('=').to_string();
    let a = auths(&format!(
        r#"{{"auths":{{"reg.io:5000":{{"auth":"{unpadded}"}}}}}}"#
    ))
    .unwrap();
    assert_eq!(a.lookup(URL), Some(cred("bob", "pw")));
}

#[test]
fn malformed_files_name_file_and_json_path() {
    let cases = [
        ("{not json", "invalid JSON at line 1"),
        ("[]", "$: expected a JSON object"),
        (r#"{"auths":[]}"#, "$.auths: expected an object"),
        (
            r#"{"auths":{"h":3}}"#,
            r#"$.auths["h"]: expected an object"#,
        ),
        (
            r#"{"auths":{"h":{"auth":"!!!"}}}"#,
            r#"$.auths["h"].auth: not base64"#,
        ),
        (
            r#"{"auths":{"h":{"username":1}}}"#,
            r#"$.auths["h"].username: expected a string"#,
        ),
    ];
    for (json, want) in cases {
        let e = auths(json).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/etc/cred.json"), "{msg}");
        assert!(msg.contains(want), "{json}: {msg}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    // The undecodable secret itself is not echoed.
    let e = auths(r#"{"auths":{"h":{"auth":"c2VjcmV0"}}}"#).unwrap_err();
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
}

#[test]
fn debug_redacts_password() {
    let d = format!("{:?}", cred("alice", "hunter2"));
    assert!(
        d.contains("alice") && d.contains("<redacted>") && !d.contains("hunter2"),
        "{d}"
    );
}

#[test]
fn file_provider_missing_rotation_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cred.json");
    let p = FileCredentials::new(path.clone());
    assert!(p.describe().contains("cred.json"));
    // Missing: no credentials, no error.
    assert_eq!(p.lookup(URL).unwrap(), None);
    let write = |u: &str, pw: &str| {
        // Write a new file and rename over (rotation as done by secret managers).
        let tmp = dir.path().join("tmp.json");
        let json =
            format!(r#"{{"auths":{{"reg.io:5000":{{"username":"{u}","password":"{pw}"}}}}}}"#);
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write("u1", "p1");
    assert_eq!(p.lookup(URL).unwrap(), Some(cred("u1", "p1")));
    write("u2", "p2");
    assert_eq!(p.lookup(URL).unwrap(), Some(cred("u2", "p2")));
    // In-place rewrite with the same length is noticed too (mtime/ctime).
    std::thread::sleep(std::time::Duration::from_millis(5));
    let json = r#"{"auths":{"reg.io:5000":{"username":"u3","password":"p3"}}}"#;
    std::fs::write(&path, json).unwrap();
    assert_eq!(p.lookup(URL).unwrap(), Some(cred("u3", "p3")));
    // Broken: an error naming the file.
    std::fs::write(&path, "{").unwrap();
    let e = p.lookup(URL).unwrap_err();
    assert!(e.to_string().contains("cred.json"), "{e}");
    // Removed again: back to none.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(p.lookup(URL).unwrap(), None);
}

/// Runs in a child process with a prepared environment (the crate forbids `unsafe`, and
/// `std::env::set_var` is unsafe in edition 2024).
#[test]
fn docker_config_path_child() {
    let Some(expect) = std::env::var_os("OBD_TEST_EXPECT_DOCKER_CONFIG") else {
        return;
    };
    let want = (!expect.is_empty()).then(|| PathBuf::from(expect));
    assert_eq!(docker_config_path(), want);
}

#[test]
fn docker_config_path_follows_env() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &std::ffi::OsStr)], expect: &std::ffi::OsStr| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "credentials::tests::docker_config_path_child",
            "--nocapture",
        ])
        .env_remove("DOCKER_CONFIG")
        .env("OBD_TEST_EXPECT_DOCKER_CONFIG", expect);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    };
    let cfg_dir = dir.path().join("dc");
    std::fs::create_dir(&cfg_dir).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    let none = std::ffi::OsStr::new("");
    // Nothing exists yet.
    run(
        &[
            ("DOCKER_CONFIG", cfg_dir.as_os_str()),
            ("HOME", home.as_os_str()),
        ],
        none,
    );
    run(&[("HOME", home.as_os_str())], none);
    // ~/.docker/config.json
    let home_cfg = home.join(".docker/config.json");
    std::fs::write(&home_cfg, "{}").unwrap();
    run(&[("HOME", home.as_os_str())], home_cfg.as_os_str());
    // $DOCKER_CONFIG wins (and does not fall back to HOME when its file is missing).
    run(
        &[
            ("DOCKER_CONFIG", cfg_dir.as_os_str()),
            ("HOME", home.as_os_str()),
        ],
        none,
    );
    let dc_cfg = cfg_dir.join("config.json");
    std::fs::write(&dc_cfg, "{}").unwrap();
    run(
        &[
            ("DOCKER_CONFIG", cfg_dir.as_os_str()),
            ("HOME", home.as_os_str()),
        ],
        dc_cfg.as_os_str(),
    );
}
