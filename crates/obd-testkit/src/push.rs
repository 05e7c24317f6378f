//! Push helpers: monolithic blob uploads and OCI image manifests, with auth as needed.
//!
//! These are test helpers: they panic (fail the test) on any error.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use reqwest::blocking::{Body, Client, RequestBuilder};
use sha2::{Digest as _, Sha256};

use crate::registry::{Auth, RegistryServer, build_client};
use crate::rt::off_runtime;

/// User-Agent of the push helpers; the token server does not count their tokens in
/// [`RegistryServer::token_requests`].
const PUSH_AGENT: &str = "obd-testkit-push/1";

/// A blob already in the registry, to reference from [`RegistryServer::push_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedLayer {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type written into the manifest descriptor.
    pub media_type: String,
    /// Descriptor annotations.
    pub annotations: BTreeMap<String, String>,
}

impl PushedLayer {
    /// A layer descriptor without annotations.
    pub fn new(digest: impl Into<String>, size: u64, media_type: impl Into<String>) -> Self {
        PushedLayer {
            digest: digest.into(),
            size,
            media_type: media_type.into(),
            annotations: BTreeMap::new(),
        }
    }

    /// Adds one annotation.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

struct Pusher<'a> {
    reg: &'a RegistryServer,
    client: Client,
}

impl Pusher<'_> {
    fn new(reg: &RegistryServer) -> Pusher<'_> {
        let ca = reg.ca_pem();
        Pusher {
            reg,
            client: build_client(ca.as_deref(), Duration::from_secs(600)),
        }
    }

    /// Adds credentials for `repo` (pull+push): Basic directly, or a fresh bearer token from
    /// the token server (fetched per request so even a very short ttl works).
    fn auth(&self, req: RequestBuilder, repo: &str) -> RequestBuilder {
        let req = req.header(reqwest::header::USER_AGENT, PUSH_AGENT);
        match &self.reg.auth {
            Auth::None => req,
            Auth::Basic { user, pass } => req.basic_auth(user, Some(pass)),
            Auth::Token { user, pass, .. } => {
                let realm = self.reg.token_realm().unwrap_or_default();
                let scope = format!("repository:{repo}:pull,push");
                let resp = self
                    .client
                    .get(&realm)
                    .query(&[
                        ("service", crate::token::SERVICE),
                        ("scope", scope.as_str()),
                    ])
                    .header(reqwest::header::USER_AGENT, PUSH_AGENT)
                    .basic_auth(user, Some(pass))
                    .send()
                    .unwrap_or_else(|e| panic!("obd-testkit: token request to {realm}: {e}"));
                let status = resp.status();
                let body: serde_json::Value = resp
                    .json()
                    .unwrap_or_else(|e| panic!("obd-testkit: token answer from {realm}: {e}"));
                let token = body
                    .get("token")
                    .and_then(|t| t.as_str())
                    .unwrap_or_else(|| panic!("obd-testkit: no token from {realm} ({status})"));
                req.bearer_auth(token)
            }
        }
    }

    /// POST an upload session, then PUT `body` with `digest` to finish it.
    fn upload(&self, repo: &str, digest: &str, len: u64, body: Body) {
        let post_url = format!("{}/uploads/", self.reg.blob_url(repo));
        let resp = self
            .auth(self.client.post(&post_url), repo)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .unwrap_or_else(|e| panic!("obd-testkit: POST {post_url}: {e}"));
        if resp.status().as_u16() != 202 {
            panic!(
                "obd-testkit: POST {post_url} answered {}: {}",
                resp.status(),
                resp.text().unwrap_or_default()
            );
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("obd-testkit: POST {post_url}: no Location"))
            .to_string();
        let mut put_url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.reg.url())
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str("digest=");
        put_url.push_str(digest);
        let resp = self
            .auth(self.client.put(&put_url), repo)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("obd-testkit: PUT blob {digest} to {repo}: {e}"));
        if resp.status().as_u16() != 201 {
            panic!(
                "obd-testkit: PUT blob {digest} to {repo} answered {}: {}",
                resp.status(),
                resp.text().unwrap_or_default()
            );
        }
    }
}

impl RegistryServer {
    /// Pushes `data` as a blob of `repo` (monolithic POST + PUT); returns `sha256:<hex>`.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        off_runtime(|| {
            let digest = sha256_digest(data);
            Pusher::new(self).upload(repo, &digest, data.len() as u64, Body::from(data.to_vec()));
            digest
        })
    }

    /// Pushes a file as a blob, streaming it (fine for 1 GiB); returns `sha256:<hex>`.
    pub fn push_blob_file(&self, repo: &str, path: &Path) -> String {
        off_runtime(|| {
            let open = || {
                File::open(path)
                    .unwrap_or_else(|e| panic!("obd-testkit: open {}: {e}", path.display()))
            };
            let mut f = open();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = f
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("obd-testkit: read {}: {e}", path.display()));
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            Pusher::new(self).upload(repo, &digest, len, Body::sized(open(), len));
            digest
        })
    }

    /// Pushes `data` as a blob and returns its [`PushedLayer`] with `media_type`.
    pub fn push_layer(&self, repo: &str, data: &[u8], media_type: &str) -> PushedLayer {
        PushedLayer::new(self.push_blob(repo, data), data.len() as u64, media_type)
    }

    /// Pushes `config_json` as the config blob and an OCI image manifest (built with
    /// oci-spec) referencing `layers` (already pushed, with their media types and
    /// annotations), tagged `tag`. Returns the manifest digest.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[PushedLayer],
        config_json: &[u8],
    ) -> String {
        let config_digest = self.push_blob(repo, config_json);
        let descriptor = |digest: &str, size: u64, media: &str, ann: &BTreeMap<String, String>| {
            let d: Digest = digest
                .parse()
                .unwrap_or_else(|e| panic!("obd-testkit: bad digest {digest:?}: {e}"));
            let mut desc = Descriptor::new(MediaType::from(media), size, d);
            if !ann.is_empty() {
                let map: HashMap<String, String> =
                    ann.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                desc.set_annotations(Some(map));
            }
            desc
        };
        let config = descriptor(
            &config_digest,
            config_json.len() as u64,
            "application/vnd.oci.image.config.v1+json",
            &BTreeMap::new(),
        );
        let layer_descs = layers
            .iter()
            .map(|l| descriptor(&l.digest, l.size, &l.media_type, &l.annotations))
            .collect::<Vec<_>>();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layer_descs)
            .build()
            .unwrap_or_else(|e| panic!("obd-testkit: building the manifest: {e}"));
        let bytes = serde_json::to_vec(&manifest)
            .unwrap_or_else(|e| panic!("obd-testkit: serializing the manifest: {e}"));
        self.push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &bytes,
        )
    }

    /// PUTs raw manifest bytes under `reference` (a tag or digest) with `media_type`;
    /// returns the manifest digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        off_runtime(|| {
            let digest = sha256_digest(bytes);
            let p = Pusher::new(self);
            let url = format!("{}/v2/{repo}/manifests/{reference}", self.url());
            let resp = p
                .auth(p.client.put(&url), repo)
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
                .send()
                .unwrap_or_else(|e| panic!("obd-testkit: PUT {url}: {e}"));
            if resp.status().as_u16() != 201 {
                panic!(
                    "obd-testkit: PUT {url} answered {}: {}",
                    resp.status(),
                    resp.text().unwrap_or_default()
                );
            }
            digest
        })
    }
}
