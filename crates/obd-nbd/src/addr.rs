//! Where an NBD server listens: `unix:/path/sock` or `tcp:host:port`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use obd_core::Error;

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NbdAddr {
    /// A unix stream socket at this path (`unix:/run/obd/dev1.sock`).
    Unix(PathBuf),
    /// A TCP address, `host:port` (`tcp:127.0.0.1:10809`, `tcp:[::1]:0`; port 0 picks a
    /// free port, see [`crate::NbdServer::addr`]).
    Tcp(String),
}

impl NbdAddr {
    /// The NBD URI a client such as `nbdinfo` or `qemu-img` uses for export `name` at this
    /// address (`nbd+unix:///name?socket=/path`, `nbd://host:port/name`).
    ///
    /// Export names and paths are put in as they are; use plain names (letters, digits,
    /// `-`, `_`, `.`) for URIs.
    pub fn uri(&self, name: &str) -> String {
        match self {
            NbdAddr::Unix(p) => format!("nbd+unix:///{name}?socket={}", p.display()),
            NbdAddr::Tcp(hp) => format!("nbd://{hp}/{name}"),
        }
    }
}

impl fmt::Display for NbdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            NbdAddr::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

impl FromStr for NbdAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::invalid_input(format!(
                "bad NBD address {s:?}: {why} (expected unix:/path/to/socket or tcp:host:port)"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            if path.contains('\0') {
                return Err(bad("NUL in socket path"));
            }
            return Ok(NbdAddr::Unix(PathBuf::from(path)));
        }
        if let Some(hp) = s.strip_prefix("tcp:") {
            let (host, port) = hp.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            if host.is_empty() || host == "[]" {
                return Err(bad("empty host"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("port is not a number 0-65535"))?;
            return Ok(NbdAddr::Tcp(hp.to_string()));
        }
        Err(bad("unknown scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for s in [
            "unix:/run/x.sock",
            "unix:rel/sock",
            "tcp:127.0.0.1:10809",
            "tcp:localhost:0",
            "tcp:[::1]:10809",
        ] {
            let a: NbdAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!(
            "unix:/a/b".parse::<NbdAddr>().unwrap(),
            NbdAddr::Unix("/a/b".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:1".parse::<NbdAddr>().unwrap(),
            NbdAddr::Tcp("127.0.0.1:1".into())
        );
        for bad in [
            "",
            "unix:",
            "tcp:",
            "tcp:host",
            "tcp::80",
            "tcp:h:99999",
            "tcp:h:x",
            "udp:h:1",
            "/path",
        ] {
            let e = bad.parse::<NbdAddr>().unwrap_err();
            assert_eq!(e.kind(), obd_core::ErrorKind::InvalidInput, "{bad}");
            assert!(e.to_string().contains("bad NBD address"), "{e}");
        }
    }

    #[test]
    fn uris() {
        assert_eq!(
            NbdAddr::Unix("/s".into()).uri("d"),
            "nbd+unix:///d?socket=/s"
        );
        assert_eq!(
            NbdAddr::Tcp("127.0.0.1:5".into()).uri(""),
            "nbd://127.0.0.1:5/"
        );
    }
}
