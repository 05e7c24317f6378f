//! Dev-only helpers that let integration tests run REAL components:
//!
//! * [`RegistryServer`]: the distribution `docker-registry` on loopback, optionally with
//!   htpasswd basic auth, a bearer-token server (a small embedded Python script signing RS256
//!   JWTs with `openssl`) or TLS (a throw-away CA made with `openssl`), plus push helpers.
//! * [`FaultProxy`]: an HTTP/1.1 proxy in front of a registry that injects 5xx answers,
//!   connection resets, truncated bodies, stalls and flipped bytes, or answers blob GETs with
//!   307 redirects.
//! * [`DelayLine`]: a TCP delay line (each chunk forwarded a fixed time after it was read).
//!
//! Everything is blocking in the public API. When a needed binary is missing the constructors
//! return [`Skip`]; tests then print `SKIP: <reason>` and return. Helpers panic (a test failure)
//! when a present component misbehaves. Every child process is killed and every temp dir removed
//! when its owner is dropped; children additionally get `SIGKILL` if the test process dies.
#![forbid(unsafe_code)]

mod certs;
mod delay;
mod process;
mod proxy;
mod proxy_body;
mod proxy_handler;
mod push;
mod registry;
mod rt;
mod token;

use std::fmt;
use std::path::PathBuf;

pub use delay::DelayLine;
pub use proxy::{FaultProxy, Faults, ProxyStats};
pub use push::{PushedLayer, sha256_digest};
pub use registry::{Auth, RegistryOpts, RegistryServer};

/// Why a test must be skipped (a missing binary, not root, ...).
///
/// Tests do `eprintln!("SKIP: {r}"); return;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

/// Finds an executable by name: first in `/usr/bin`, `/usr/sbin`, `/bin`, `/sbin`,
/// `/usr/local/bin`, then in every directory of `PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf, Skip> {
    let fixed = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .into_iter()
        .map(PathBuf::from);
    let from_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    fixed
        .chain(from_path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Skip(format!(
                "`{name}` is not installed (not in /usr/bin nor PATH)"
            ))
        })
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Path of the `docker-registry` binary (`/usr/bin/docker-registry` or a `PATH` lookup).
pub fn docker_registry() -> Result<PathBuf, Skip> {
    find_binary("docker-registry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_a_skip() {
        let err = find_binary("obd-testkit-no-such-binary").unwrap_err();
        assert!(
            err.to_string().contains("obd-testkit-no-such-binary"),
            "{err}"
        );
        assert!(find_binary("sh").is_ok());
    }

    #[test]
    fn auth_debug_hides_passwords() {
        let a = Auth::token("u", "hunter2", std::time::Duration::from_secs(1));
        let b = Auth::basic("u", "hunter2");
        assert!(!format!("{a:?}{b:?}").contains("hunter2"));
    }
}
