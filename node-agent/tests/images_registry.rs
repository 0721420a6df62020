//! The registry client against an in-process fake registry that behaves like Docker
//! Hub: anonymous bearer-token challenges, a Docker manifest list to choose the host's
//! platform from, Docker schema 2 media types, and blobs served by redirect to
//! "storage". Needs no root and no network.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use skiff_node_agent::image::{ImageError, ImageStore, PullPolicy};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const TOKEN: &str = "anonymous-token-123";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

struct Fake {
    /// `Bearer` or `Basic`: the challenge sent to an unauthenticated request.
    scheme: &'static str,
    addr: String,
    /// Path under `/v2/test/app/` → (content type, body).
    content: HashMap<String, (&'static str, Vec<u8>)>,
    /// Blob digest → bytes, served at `/storage/<digest>` without authentication.
    storage: HashMap<String, Vec<u8>>,
    token_requests: AtomicUsize,
    requests: AtomicUsize,
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path == "/token" {
        fake.token_requests.fetch_add(1, Ordering::SeqCst);
        let query = req.uri().query().unwrap_or("");
        // The scope and service of the challenge must come back.
        if !query.contains("scope=repository%3Atest%2Fapp%3Apull")
            || !query.contains("service=fake")
        {
            return (StatusCode::BAD_REQUEST, format!("bad token query {query}")).into_response();
        }
        return format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#).into_response();
    }
    if let Some(digest) = path.strip_prefix("/storage/") {
        return match fake.storage.get(digest) {
            Some(bytes) => bytes.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        let challenge = if fake.scheme == "Basic" {
            r#"Basic realm="fake""#.to_string()
        } else {
            format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:test/app:pull""#,
                fake.addr
            )
        };
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, challenge)
            .body(Body::from(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ))
            .unwrap();
    }
    let Some(rest) = path.strip_prefix("/v2/test/app/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(digest) = rest.strip_prefix("blobs/") {
        if fake.storage.contains_key(digest) {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(
                    header::LOCATION,
                    format!("http://{}/storage/{digest}", fake.addr),
                )
                .body(Body::empty())
                .unwrap();
        }
    }
    match fake.content.get(rest) {
        Some((content_type, body)) => Response::builder()
            .header(header::CONTENT_TYPE, *content_type)
            .header("Docker-Content-Digest", sha256(body))
            .body(Body::from(body.clone()))
            .unwrap(),
        None => (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
            .into_response(),
    }
}

/// Starts the fake on a loopback port with one image, tag `v1`, for this host's
/// platform (and a decoy for another).
async fn start(scheme: &'static str) -> (Arc<Fake>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();

    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "hello.txt", &b"hello\n"[..])
        .unwrap();
    let layer = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let layer_gz = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Entrypoint": ["/hello"], "Cmd": ["--loud"], "Env": ["X=1"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": sha256(&layer_gz), "size": layer_gz.len()}],
    }))
    .unwrap();
    let decoy_arch = if host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": format!("sha256:{}", "0".repeat(64)),
             "size": 10, "platform": {"architecture": decoy_arch, "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": sha256(&manifest), "size": manifest.len(),
             "platform": {"architecture": host_arch(), "os": "linux"}},
        ],
    }))
    .unwrap();

    let mut content = HashMap::new();
    content.insert("manifests/v1".to_string(), (DOCKER_LIST, list));
    content.insert(
        format!("manifests/{}", sha256(&manifest)),
        (DOCKER_MANIFEST, manifest),
    );
    let mut storage = HashMap::new();
    storage.insert(sha256(&config), config);
    storage.insert(sha256(&layer_gz), layer_gz);
    let fake = Arc::new(Fake {
        scheme,
        addr,
        content,
        storage,
        token_requests: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, server)
}

#[tokio::test]
async fn pulls_through_a_bearer_challenge_and_a_manifest_list() {
    let (fake, server) = start("Bearer").await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let reference = format!("{}/test/app:v1", fake.addr);
    let image = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.ensure(&reference, PullPolicy::Always),
    )
    .await
    .expect("pull timed out")
    .unwrap();
    assert_eq!(image.reference, reference);
    assert_eq!(image.config.entrypoint, ["/hello"]);
    assert_eq!(image.config.cmd, ["--loud"]);
    assert_eq!(image.config.env, ["X=1"]);
    assert_eq!(
        std::fs::read_to_string(image.layers[0].join("hello.txt")).unwrap(),
        "hello\n"
    );
    // One token for the whole pull.
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 1);

    // Unknown tag: NotFound, with the registry's words.
    let err = store
        .pull(&format!("{}/test/app:v2", fake.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    server.abort();
}

#[tokio::test]
async fn basic_auth_registries_are_refused_with_a_reason() {
    let (fake, server) = start("Basic").await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let err = store
        .pull(&format!("{}/test/app:v1", fake.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err}");
    assert!(err.to_string().contains("Basic authentication"), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    server.abort();
}
