//! Pulling from an OCI distribution registry (distribution-spec "pull" only).
//!
//! ```text
//! GET /v2/<repo>/manifests/<tag|digest>   Accept: OCI + Docker index and manifest
//!   └ an index / manifest list → pick linux/<host arch> → GET …/manifests/<digest>
//! GET /v2/<repo>/blobs/<config digest>    verified, stored as a blob
//! GET /v2/<repo>/blobs/<layer digest>     streamed to tmp/, verified, unpacked, and
//!                                         the uncompressed stream checked against
//!                                         the config's diff id (3 layers at a time)
//! ```
//!
//! Authentication: anonymous bearer tokens. A 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is answered by fetching a token
//! from the realm and retrying (how Docker Hub works without credentials). Transport:
//! HTTPS (rustls, Mozilla roots), or plain HTTP for loopback registries and those
//! listed as insecure. `docker.io` is served by `registry-1.docker.io`.

use std::path::Path;

use futures::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::content::{check, digest_of, read_blob, verify, MAX_DOCUMENT};
use super::error::{ImageError, IoContext};
use super::oci::{platforms, select_platform, ConfigFile, Document, Manifest, MANIFEST_ACCEPT};
use super::reference::{Reference, DOCKER_HUB};
use super::store::{remove_tree, ImageStore};
use super::LocalImage;

/// Layers downloaded at once.
const PARALLEL_LAYERS: usize = 3;

/// Pulls `reference` into `store`. Called by [`ImageStore::pull`], which coalesces
/// concurrent pulls of one reference.
pub(crate) async fn pull(
    store: &ImageStore,
    reference: &Reference,
) -> Result<LocalImage, ImageError> {
    let name = reference.to_string();
    let session = Session::new(store, reference)?;
    tracing::info!(image = %name, "pulling image");

    let (manifest_digest, manifest_bytes, manifest) = session.platform_manifest().await?;

    // Unchanged since the last pull (the `Always` policy's common case)?
    if let Some(local) = store.get(&name) {
        if local_manifest_digest(store, &name).as_deref() == Some(manifest_digest.as_str()) {
            tracing::debug!(image = %name, "image is up to date");
            return Ok(local);
        }
    }

    let _lock = store.writer_lock_async().await?;

    let config_digest = manifest.config.digest.clone();
    let config_bytes = match read_blob(store.layout(), &config_digest) {
        Ok(bytes) => bytes,
        Err(_) => session.small_blob(&config_digest).await?,
    };
    let config = ConfigFile::parse(&format!("{name} config {config_digest}"), &config_bytes)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::invalid(
            format!("{name} manifest {manifest_digest}"),
            format!(
                "{} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }

    let jobs: Vec<_> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .filter(|(_, diff_id)| store.layer_size(diff_id).is_none())
        .map(|(layer, diff_id)| (layer.clone(), diff_id.clone()))
        .collect();
    // Every started layer is finished before an error is returned, so no download or
    // unpack outlives the pull; the layers that did succeed stay for the next attempt.
    let results: Vec<Result<(), ImageError>> = futures::stream::iter(jobs)
        .map(|(layer, diff_id)| session.install_layer(layer.digest, layer.size, diff_id))
        .buffer_unordered(PARALLEL_LAYERS)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let store2 = store.clone();
    let image = tokio::task::spawn_blocking(move || {
        store2.commit(
            std::slice::from_ref(&name),
            Some((&manifest_digest, &manifest_bytes)),
            &config_digest,
            &config_bytes,
            &config,
        )
    })
    .await
    .map_err(|e| ImageError::io("commit task failed", std::io::Error::other(e.to_string())))??;
    tracing::info!(image = %image.reference, id = %image.id, "pulled image");
    Ok(image)
}

fn local_manifest_digest(store: &ImageStore, name: &str) -> Option<String> {
    let bytes = std::fs::read(store.layout().ref_file(name)).ok()?;
    let record: super::schema::RefRecord = serde_json::from_slice(&bytes).ok()?;
    record.manifest_digest
}

/// One pull's connection to a repository: base URL and the bearer token, if any.
struct Session<'a> {
    store: &'a ImageStore,
    client: reqwest::Client,
    reference: String,
    repository: String,
    /// `<scheme>://<host>/v2/<repository>`
    base: String,
    token: parking_lot::Mutex<Option<String>>,
}

impl<'a> Session<'a> {
    fn new(store: &'a ImageStore, r: &Reference) -> Result<Session<'a>, ImageError> {
        let scheme = if store.is_insecure(&r.registry) {
            "http"
        } else {
            "https"
        };
        let host = if r.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &r.registry
        };
        Ok(Session {
            store,
            client: store.client()?,
            reference: r.to_string(),
            repository: r.repository.clone(),
            base: format!("{scheme}://{host}/v2/{}", r.repository),
            token: parking_lot::Mutex::new(None),
        })
    }

    fn registry_error(&self, message: impl Into<String>) -> ImageError {
        ImageError::Registry {
            reference: self.reference.clone(),
            message: message.into(),
        }
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> ImageError {
        // reqwest's own message ("error sending request") hides the cause; spell out
        // the chain once, without the URL it repeats.
        let mut detail = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cause {
            let text = c.to_string().replace(&format!(" for url ({url})"), "");
            if !detail.contains(&text) {
                detail.push(text);
            }
            cause = c.source();
        }
        ImageError::Transport {
            reference: self.reference.clone(),
            url: url.to_string(),
            detail: detail.join(": "),
            source: std::sync::Arc::new(e),
        }
    }

    /// GET with the current token; on a 401 fetch a token per the challenge and retry
    /// once. Returns a 2xx response; other statuses become errors.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        let mut retried = false;
        loop {
            let mut request = self.client.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = self.token.lock().clone() {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| self.transport(url, e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let token = self.fetch_token(&challenge).await?;
                *self.token.lock() = Some(token);
                retried = true;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(self.status_error(url, response).await);
        }
    }

    async fn status_error(&self, url: &str, response: reqwest::Response) -> ImageError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // Distribution errors: {"errors":[{"code":"MANIFEST_UNKNOWN","message":"…"}]}
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorBody>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let parsed: Option<Errors> = serde_json::from_str(&body).ok();
        let detail = match &parsed {
            Some(e) if !e.errors.is_empty() => e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            _ => body
                .chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string(),
        };
        let unknown = parsed.as_ref().is_some_and(|e| {
            e.errors.iter().any(|e| {
                matches!(
                    e.code.as_str(),
                    "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN"
                )
            })
        });
        if status == StatusCode::NOT_FOUND || unknown {
            return ImageError::NotFound {
                reference: self.reference.clone(),
                detail: format!("GET {url}: {status} {detail}"),
            };
        }
        let hint = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            " (the repository is private or does not exist; only anonymous pulls are supported)"
        } else {
            ""
        };
        self.registry_error(format!("GET {url}: {status} {detail}{hint}"))
    }

    /// Answers a `WWW-Authenticate` challenge with an anonymous bearer token.
    async fn fetch_token(&self, challenge: &str) -> Result<String, ImageError> {
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            let scheme = challenge.split(' ').next().unwrap_or("");
            return Err(self.registry_error(if scheme.is_empty() {
                "unauthorized, and the registry sent no authentication challenge".to_string()
            } else {
                format!("the registry wants {scheme} authentication; only anonymous bearer tokens are supported")
            }));
        };
        let params = parse_challenge(params);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let realm = param("realm")
            .ok_or_else(|| self.registry_error("bearer challenge without a realm"))?;
        let scope =
            param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        let response = self
            .client
            .get(&realm)
            .query(&query)
            .send()
            .await
            .map_err(|e| self.transport(&realm, e))?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(self.registry_error(format!(
                "the token service {realm} refused an anonymous token: {status}"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&realm, e))?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&bytes).map_err(|e| {
            self.registry_error(format!("the token service {realm} answered no token: {e}"))
        })?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.registry_error(format!("the token service {realm} answered no token"))
            })
    }

    /// Reads a whole response of at most [`MAX_DOCUMENT`] bytes.
    async fn read_small(
        &self,
        url: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ImageError> {
        if response.content_length().is_some_and(|l| l > MAX_DOCUMENT) {
            return Err(ImageError::invalid(
                url,
                format!("larger than {MAX_DOCUMENT} bytes"),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(url, e))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_DOCUMENT {
                return Err(ImageError::invalid(
                    url,
                    format!("larger than {MAX_DOCUMENT} bytes"),
                ));
            }
        }
        Ok(body)
    }

    /// Fetches a manifest or index by tag or digest; returns its digest, bytes, and
    /// parsed form. A digest request is verified; a tag request is verified against
    /// `Docker-Content-Digest` when the registry sends it.
    async fn manifest(&self, selector: &str) -> Result<(String, Vec<u8>, Document), ImageError> {
        let url = format!("{}/manifests/{selector}", self.base);
        let response = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_small(&url, response).await?;
        let digest = digest_of(&bytes);
        let what = format!("manifest of {}", self.reference);
        if selector.starts_with("sha256:") {
            check(&what, selector, &digest)?;
        } else if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            check(&what, &h, &digest)?;
        }
        let document = Document::parse(&what, &content_type, &bytes)?;
        Ok((digest, bytes, document))
    }

    /// The manifest for this host: the requested one, or the linux/<arch> entry of an
    /// index.
    async fn platform_manifest(&self) -> Result<(String, Vec<u8>, Manifest), ImageError> {
        let reference = Reference::parse(&self.reference)?;
        let (digest, bytes, document) = self.manifest(reference.manifest_selector()).await?;
        let index = match document {
            Document::Manifest(m) => return Ok((digest, bytes, m)),
            Document::Index(index) => index,
        };
        let Some(entry) = select_platform(&index) else {
            return Err(ImageError::Unsupported {
                what: self.reference.clone(),
                reason: format!(
                    "no linux/{} image in its index (offers: {})",
                    super::oci::host_architecture(),
                    platforms(&index)
                ),
            });
        };
        let (digest, bytes, document) = self.manifest(&entry.digest).await?;
        match document {
            Document::Manifest(m) => Ok((digest, bytes, m)),
            Document::Index(_) => Err(ImageError::Unsupported {
                what: self.reference.clone(),
                reason: "an index nested in an index".into(),
            }),
        }
    }

    /// Fetches and verifies a small blob (the config).
    async fn small_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let response = self.get(&url, None).await?;
        let bytes = self.read_small(&url, response).await?;
        verify(
            &format!("blob {digest} of {}", self.reference),
            digest,
            &bytes,
        )?;
        Ok(bytes)
    }

    /// Downloads a layer blob to a staging file, verifying its digest, then unpacks it.
    async fn install_layer(
        &self,
        digest: String,
        size: i64,
        diff_id: String,
    ) -> Result<(), ImageError> {
        // Removed however this ends, including by the future being dropped.
        let staging = Staging(self.store.layout().tmp_path("download"));
        let staging = &staging.0;
        let result = self.download(&digest, size, staging).await;
        match result {
            Ok(()) => {
                let store = self.store.clone();
                let what = format!("layer {digest} of {}", self.reference);
                let path = staging.clone();
                tokio::task::spawn_blocking(move || {
                    let file = std::fs::File::open(&path)
                        .ctx(|| format!("cannot open {}", path.display()))?;
                    store.install_layer(&what, &diff_id, Some(&digest), file)
                })
                .await
                .map_err(|e| {
                    ImageError::io("unpack task failed", std::io::Error::other(e.to_string()))
                })
                .and_then(|r| r)
                .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    async fn download(&self, digest: &str, size: i64, dest: &Path) -> Result<(), ImageError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let mut response = self.get(&url, None).await?;
        let what = format!("layer {digest} of {}", self.reference);
        let mut file = tokio::fs::File::create(dest)
            .await
            .ctx(|| format!("cannot create {}", dest.display()))?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(&url, e))?
        {
            received += chunk.len() as u64;
            if size > 0 && received > size as u64 {
                return Err(ImageError::invalid(
                    &what,
                    format!("the registry sent more than the {size} bytes the manifest declares"),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .ctx(|| format!("cannot write {}", dest.display()))?;
        }
        file.flush()
            .await
            .ctx(|| format!("cannot write {}", dest.display()))?;
        check(
            &what,
            digest,
            &format!("sha256:{}", hex::encode(hasher.finalize())),
        )
    }
}

/// A staging file removed on drop.
struct Staging(std::path::PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

/// Splits `realm="…",service="…",scope="…"` into pairs (values may hold commas).
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_string();
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            p,
            [
                (
                    "realm".to_string(),
                    "https://auth.docker.io/token".to_string()
                ),
                ("service".to_string(), "registry.docker.io".to_string()),
                (
                    "scope".to_string(),
                    "repository:library/busybox:pull,push".to_string()
                ),
            ]
        );
        assert_eq!(parse_challenge("realm=x, service=y").len(), 2);
    }
}
