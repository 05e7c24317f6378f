//! Credentials: the provider trait, docker-style `auths` maps with longest-prefix matching,
//! and the credential file provider.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use obd_core::{Error, ErrorKind, Result};
use reqwest::Url;
use serde_json::Value;

/// A username and password for a registry. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name (may appear in error messages).
    pub username: String,
    /// The password or access token (never printed).
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A source of registry credentials (upstream `credentialConfig`).
pub trait CredentialProvider: Send + Sync {
    /// Credentials for `blob_url` (`https://host/v2/ns/repo/blobs/sha256:…`), or `None` when
    /// this provider has none. Called from blocking-capable threads, only when credentials
    /// are needed (a token fetch or a Basic challenge), so rotated credentials take effect
    /// without a restart.
    fn lookup(&self, blob_url: &str) -> Result<Option<Credential>>;
    /// A short description for messages (`credential file /etc/…`), without secrets.
    fn describe(&self) -> String;
}

/// A parsed docker-style `auths` map.
#[derive(Debug, Clone, Default)]
pub(crate) struct Auths {
    /// (normalised key, credential), in the order read.
    entries: Vec<(String, Credential)>,
}

impl Auths {
    /// Parse the `auths` object at JSON path `at` of a document from `source` (for errors).
    pub fn parse(auths: Option<&Value>, source: &str, at: &str) -> Result<Auths> {
        let bad = |path: String, what: &str| {
            Error::new(ErrorKind::InvalidInput, format!("{source}: {path}: {what}"))
        };
        let map = match auths {
            None | Some(Value::Null) => return Ok(Auths::default()),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(bad(at.to_string(), "expected an object")),
        };
        let mut entries = Vec::new();
        for (key, entry) in map {
            let path = format!("{at}[{key:?}]");
            let Value::Object(e) = entry else {
                return Err(bad(path, "expected an object"));
            };
            let text = |name: &str| -> Result<Option<&str>> {
                match e.get(name) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.as_str())),
                    Some(_) => Err(bad(format!("{path}.{name}"), "expected a string")),
                }
            };
            let cred = match text("auth")? {
                Some(a) if !a.is_empty() => {
                    let decoded = decode_auth(a).ok_or_else(|| {
                        bad(format!("{path}.auth"), "not base64 of user:password")
                    })?;
                    Some(decoded)
                }
                _ => match (text("username")?, text("password")?) {
                    (Some(u), p) if !u.is_empty() => Some(Credential {
                        username: u.to_string(),
                        password: p.unwrap_or("").to_string(),
                    }),
                    // `{}` (credential helper entries), identity tokens: nothing usable here.
                    _ => None,
                },
            };
            if let Some(c) = cred {
                entries.push((normalize_key(key), c));
            }
        }
        Ok(Auths { entries })
    }

    /// The credential whose key is the **longest** prefix of `blob_url` among `host`,
    /// `host/ns`, `host/ns/repo`, … (ties: the first read).
    pub fn lookup(&self, blob_url: &str) -> Option<Credential> {
        let prefixes = url_prefixes(blob_url);
        let mut best: Option<(usize, &Credential)> = None;
        for (key, cred) in &self.entries {
            if let Some(rank) = prefixes.iter().position(|p| p == key)
                && best.is_none_or(|(r, _)| rank > r)
            {
                best = Some((rank, cred));
            }
        }
        best.map(|(_, c)| c.clone())
    }
}

fn decode_auth(a: &str) -> Option<Credential> {
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = engine.decode(a.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    (!u.is_empty()).then(|| Credential {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// Docker Hub answers under several names; credentials for any of them apply to all.
fn canonical_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => h,
    }
}

/// `https://Host:5000/v1/` → `host:5000`; `host/v2/ns/` → `host/ns`.
pub(crate) fn normalize_key(key: &str) -> String {
    let k = key.trim();
    let k = ["https://", "http://"]
        .iter()
        .find_map(|s| {
            k.get(..s.len())
                .filter(|p| p.eq_ignore_ascii_case(s))
                .map(|_| &k[s.len()..])
        })
        .unwrap_or(k);
    let mut parts = k.split('/').filter(|s| !s.is_empty());
    let mut out = canonical_host(parts.next().unwrap_or(""));
    let mut first = true;
    for p in parts {
        if first && (p == "v1" || p == "v2") {
            first = false;
            continue;
        }
        first = false;
        out.push('/');
        out.push_str(p);
    }
    out
}

/// `host`, `host/ns`, `host/ns/repo`, … of a blob URL, shortest first (skipping `/v2` and
/// stopping at `/blobs`).
pub(crate) fn url_prefixes(blob_url: &str) -> Vec<String> {
    let Ok(u) = Url::parse(blob_url) else {
        return Vec::new();
    };
    let Some(host) = u.host_str() else {
        return Vec::new();
    };
    let mut cur = canonical_host(&match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    });
    let mut out = vec![cur.clone()];
    let mut segs = u
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    let mut first = true;
    for s in &mut segs {
        if first && s == "v2" {
            first = false;
            continue;
        }
        first = false;
        if s == "blobs" || s == "manifests" {
            break;
        }
        cur.push('/');
        cur.push_str(s);
        out.push(cur.clone());
    }
    out
}

/// Identity of a file version: re-read when any of these changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Credentials from a docker-style JSON file (upstream `credentialConfig.mode = "file"`,
/// and also a docker `~/.docker/config.json`):
///
/// ```json
/// { "auths": { "host":             { "username": "u", "password": "p" },
///              "https://host/v1/": { "auth": "<base64 user:pass>" },
///              "host/ns/repo":     { "auth": "…" } } }
/// ```
///
/// Keys are normalised (scheme, a leading `/v1` or `/v2` path segment and trailing `/` are
/// dropped; Docker Hub names are unified) and compared with `host`, `host/ns`,
/// `host/ns/repo`, … of the blob URL. **The longest matching key wins** — upstream overlaybd
/// takes the first matching key in JSON order, so a broad `host` entry listed before a
/// `host/ns/repo` entry shadows it there; here the more specific entry is used. Entries
/// without usable credentials (`{}` for credential helpers, identity tokens) are skipped.
///
/// The file is re-read whenever its inode, size, mtime or ctime changes, so rotated
/// credentials apply without a restart. A missing file means no credentials; a malformed
/// one is an error naming the file and the JSON path.
pub struct FileCredentials {
    path: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<Auths>)>>,
}

impl fmt::Debug for FileCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCredentials")
            .field("path", &self.path)
            .finish()
    }
}

impl FileCredentials {
    /// A provider reading `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        FileCredentials {
            path,
            cache: Mutex::new(None),
        }
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Result<Option<Arc<Auths>>> {
        // A writer may replace the file while we read it: retry a few times until the stamp
        // is the same before and after the read.
        for _ in 0..3 {
            let before = match std::fs::metadata(&self.path) {
                Ok(m) => Stamp::of(&m),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok(None);
                }
                Err(e) => return Err(Error::io("stat credential file", e).with_path(&self.path)),
            };
            if let Some((stamp, auths)) = &*self.cache.lock().unwrap_or_else(|p| p.into_inner())
                && *stamp == before
            {
                return Ok(Some(auths.clone()));
            }
            let text = match std::fs::read(&self.path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read credential file", e).with_path(&self.path)),
            };
            let after = std::fs::metadata(&self.path).map(|m| Stamp::of(&m)).ok();
            if after.as_ref() != Some(&before) {
                continue;
            }
            let auths = Arc::new(parse_file(&text, &self.path)?);
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((before, auths.clone()));
            return Ok(Some(auths));
        }
        Err(Error::new(
            ErrorKind::Io,
            "credential file keeps changing while being read",
        )
        .with_path(&self.path))
    }
}

fn parse_file(text: &[u8], path: &Path) -> Result<Auths> {
    let source = format!("credential file {}", path.display());
    let doc: Value = serde_json::from_slice(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{source}: invalid JSON at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(root) = &doc else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{source}: $: expected a JSON object"),
        ));
    };
    Auths::parse(root.get("auths"), &source, "$.auths")
}

impl CredentialProvider for FileCredentials {
    fn lookup(&self, blob_url: &str) -> Result<Option<Credential>> {
        Ok(self.current()?.and_then(|a| a.lookup(blob_url)))
    }

    fn describe(&self) -> String {
        format!("credential file {}", self.path.display())
    }
}

/// The docker client configuration: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`, if that file exists.
pub fn docker_config_path() -> Option<PathBuf> {
    let p = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    p.is_file().then_some(p)
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
