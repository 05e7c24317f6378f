//! The bearer-token server: an embedded Python script run with `python3`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Skip;
use crate::process::ChildGuard;

const SCRIPT: &str = include_str!("token_server.py");

/// `service` claim / registry `auth.token.service`.
pub(crate) const SERVICE: &str = "obd-testkit-registry";
/// `iss` claim / registry `auth.token.issuer`.
pub(crate) const ISSUER: &str = "obd-testkit-issuer";

/// A running token server (killed on drop).
pub(crate) struct TokenServer {
    _child: ChildGuard,
    port: u16,
    counter: PathBuf,
    log: PathBuf,
    /// Certificate whose key signs the tokens (the registry's `rootcertbundle`).
    pub(crate) cert: PathBuf,
}

impl TokenServer {
    /// Starts the server in `dir`; panics when it does not come up within `timeout`.
    pub(crate) fn start(
        dir: &Path,
        user: &str,
        pass: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<TokenServer, Skip> {
        let python = crate::find_binary("python3")?;
        let openssl = crate::find_binary("openssl")?;
        let (key, cert) = crate::certs::make_token_signer(dir)?;
        let script = dir.join("token_server.py");
        let cfg_path = dir.join("token_server.json");
        let port_file = dir.join("token_server.port");
        let counter = dir.join("token_server.count");
        let log = dir.join("token_server.log");
        let cfg = serde_json::json!({
            "openssl": openssl,
            "key": key,
            "cert": cert,
            "port_file": port_file,
            "counter": counter,
            "user": user,
            "password": pass,
            "ttl": ttl.as_secs_f64(),
            "service": SERVICE,
            "issuer": ISSUER,
            "verbose": std::env::var_os("OBD_TESTKIT_DEBUG").is_some(),
        });
        std::fs::write(&script, SCRIPT)
            .and_then(|()| std::fs::write(&cfg_path, cfg.to_string()))
            .and_then(|()| std::fs::write(&counter, ""))
            .unwrap_or_else(|e| panic!("obd-testkit: cannot write {}: {e}", dir.display()));
        let mut child = ChildGuard::spawn("token server", &python, &[&script, &cfg_path], &log)
            .unwrap_or_else(|e| panic!("obd-testkit: cannot start {}: {e}", python.display()));
        let deadline = Instant::now() + timeout;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break port;
            }
            let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = child.exited() {
                panic!(
                    "obd-testkit: token server exited ({status}); log:\n{}",
                    log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "obd-testkit: token server not up after {timeout:?}; log:\n{}",
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(TokenServer {
            _child: child,
            port,
            counter,
            log,
            cert,
        })
    }

    /// The token endpoint (`auth.token.realm`).
    pub(crate) fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Tokens issued to callers other than the testkit's own push helpers.
    pub(crate) fn client_tokens(&self) -> u64 {
        self.count(|l| l == "client")
    }

    /// All tokens issued.
    pub(crate) fn all_tokens(&self) -> u64 {
        self.count(|l| !l.is_empty())
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> u64 {
        let text = std::fs::read_to_string(&self.counter).unwrap_or_default();
        text.lines().filter(|l| pred(l.trim())).count() as u64
    }

    /// The server's log text.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
