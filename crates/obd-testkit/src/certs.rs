//! Throw-away keys and certificates made with the `openssl` command line tool.

use std::path::{Path, PathBuf};

use crate::Skip;
use crate::process::run_checked;

/// Files of a TLS server identity for 127.0.0.1 / localhost.
pub(crate) struct TlsFiles {
    /// The CA certificate clients must trust.
    pub(crate) ca_pem: PathBuf,
    /// The server certificate (leaf, then CA) served by the registry.
    pub(crate) cert_pem: PathBuf,
    /// The server's private key.
    pub(crate) key_pem: PathBuf,
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// Makes a CA and a leaf certificate it signed for `IP:127.0.0.1, DNS:localhost` in `dir`.
pub(crate) fn make_tls(dir: &Path) -> Result<TlsFiles, Skip> {
    let openssl = crate::find_binary("openssl")?;
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    let (key, csr, leaf, chain) = (p("tls.key"), p("tls.csr"), p("leaf.pem"), p("tls.pem"));
    let ext = p("leaf.ext");
    let mut ca_args: Vec<&str> = vec!["req", "-x509"];
    ca_args.extend(EC);
    ca_args.extend([
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "3650",
        "-subj",
        "/CN=obd-testkit test CA",
    ]);
    run_checked(&openssl, &ca_args);
    let mut csr_args: Vec<&str> = vec!["req", "-new"];
    csr_args.extend(EC);
    csr_args.extend([
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run_checked(&openssl, &csr_args);
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap_or_else(|e| panic!("obd-testkit: cannot write {ext}: {e}"));
    let serial = format!("0x{}", uuid::Uuid::new_v4().simple());
    run_checked(
        &openssl,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "3650",
            "-extfile",
            &ext,
            "-out",
            &leaf,
        ],
    );
    let mut both = std::fs::read(&leaf).unwrap_or_default();
    both.extend(std::fs::read(&ca_pem).unwrap_or_default());
    std::fs::write(&chain, both).unwrap_or_else(|e| panic!("obd-testkit: write {chain}: {e}"));
    Ok(TlsFiles {
        ca_pem: ca_pem.into(),
        cert_pem: chain.into(),
        key_pem: key.into(),
    })
}

/// Makes an RSA-2048 key and a self-signed certificate for signing RS256 tokens.
/// Returns (key, cert).
pub(crate) fn make_token_signer(dir: &Path) -> Result<(PathBuf, PathBuf), Skip> {
    let openssl = crate::find_binary("openssl")?;
    let key = dir.join("token-signer.key");
    let cert = dir.join("token-signer.pem");
    let (k, c) = (key.to_string_lossy(), cert.to_string_lossy());
    run_checked(
        &openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "3650",
            "-subj",
            "/CN=obd-testkit token issuer",
        ],
    );
    Ok((key, cert))
}
