//! The image store end to end, as root: building, importing, pulling from a real
//! registry (Debian's `docker-registry`), mounting overlay root filesystems and running
//! busybox in them with `chroot`. Each test skips, saying why, when it is not root or
//! a tool it needs is missing; each cleans up its mounts, directories and processes.

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use skiff_node_agent::image::{
    build_busybox, run_cli, ImageCmd, ImageError, ImageStore, LocalImage, PullPolicy,
};

const BUSYBOX: &str = "/bin/busybox";
/// Every async test gives up after this long.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------
// Preconditions

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `Some(reason)` if the test cannot run here.
fn missing(needs_root: bool, tools: &[&str]) -> Option<String> {
    if needs_root && !is_root() {
        return Some("needs root (mknod, trusted xattrs, mount)".into());
    }
    if tools.contains(&"busybox") && !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    for tool in tools.iter().filter(|t| **t != "busybox") {
        if !have(tool) {
            return Some(format!("{tool} missing (see .ci/install-deps)"));
        }
    }
    None
}

macro_rules! skip_unless {
    ($needs_root:expr, $tools:expr) => {
        if let Some(reason) = missing($needs_root, $tools) {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------
// Fixtures: tar layers and OCI layouts

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Builds layer tars by hand, including entries the `tar` crate's checked API refuses.
struct LayerTar(tar::Builder<Vec<u8>>);

impl LayerTar {
    fn new() -> Self {
        LayerTar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, path: &str, link: &str, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        h
    }

    fn dir(mut self, path: &str) -> Self {
        let h = Self::header(tar::EntryType::Directory, path, "", 0, 0o755);
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }

    fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Regular, path, "", data.len() as u64, mode);
        self.0.append(&h, data).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Symlink, path, target, 0, 0o777);
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }

    fn build(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A layer with busybox and the applets the tests use.
fn busybox_layer() -> Vec<u8> {
    let binary = fs::read(BUSYBOX).unwrap();
    let mut t = LayerTar::new()
        .dir("bin/")
        .file("bin/busybox", &binary, 0o755);
    for applet in ["sh", "echo", "cat", "ls"] {
        t = t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.dir("etc/")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .build()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes an OCI image layout at `dir` holding one image named `name` (the
/// `org.opencontainers.image.ref.name` annotation) with `layers` (uncompressed tars,
/// lowest first; gzip-compressed in the layout when `compress`). Returns the layer
/// blob digests.
fn write_layout(dir: &Path, name: &str, layers: &[Vec<u8>], compress: bool) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> String {
        let digest = sha256(bytes);
        fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        digest
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for layer in layers {
        let (bytes, media_type) = if compress {
            (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = put(&bytes);
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": bytes.len()
        }));
        digests.push(digest);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/tmp", "User": "0:0"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    digests
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The two-layer image of the whiteout test: layer 2 deletes `/gone` and replaces
/// `/d`'s content.
fn whiteout_layers() -> Vec<Vec<u8>> {
    let lower = LayerTar::new()
        .file("gone", b"lower", 0o644)
        .file("kept", b"kept", 0o600)
        .dir("d/")
        .file("d/old1", b"1", 0o644)
        .file("d/old2", b"2", 0o644)
        .build();
    let upper = LayerTar::new()
        .file(".wh.gone", b"", 0o644)
        .dir("d/")
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/new", b"new", 0o644)
        .build();
    vec![busybox_layer(), lower, upper]
}

// ---------------------------------------------------------------------------------
// Mounts and processes, cleaned up on drop

/// A mounted rootfs under a container dir; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
    rootfs: PathBuf,
}

impl Mounted {
    fn new(store: &ImageStore, image: &LocalImage, dir: &Path) -> Mounted {
        let rootfs = store.mount_rootfs(image, dir).expect("mount rootfs");
        Mounted {
            dir: dir.to_path_buf(),
            rootfs,
        }
    }

    /// Runs `args` in the rootfs with `chroot`; returns stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("20")
            .arg("chroot")
            .arg(&self.rootfs)
            .args(args)
            .output()
            .expect("run chroot");
        assert!(
            out.status.success(),
            "chroot {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = ImageStore::unmount_rootfs(&self.dir) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A child process killed (by pid) and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_tool(program: &str, args: &[&str]) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("skiff-images-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn busybox_image_builds_offline_and_runs_in_a_chroot() {
    skip_unless!(true, &["busybox", "chroot", "timeout"]);
    let tmp = tempdir();
    let agent_root = tmp.path().join("agent");
    let store = ImageStore::open(&skiff_node_agent::image::store_dir(&agent_root)).unwrap();
    let image = build_busybox(&store, "skiff.local/busybox:latest", Path::new(BUSYBOX)).unwrap();
    assert_eq!(image.reference, "skiff.local/busybox:latest");
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(image.layers.len(), 1);
    assert!(image.id.starts_with("sha256:") && image.size > 1_000_000);

    // Rebuilding gives the same image: deterministic layer, same id.
    let again = build_busybox(&store, "skiff.local/busybox:latest", Path::new(BUSYBOX)).unwrap();
    assert_eq!(again.id, image.id);
    assert_eq!(store.list(), vec![image.clone()]);
    assert_eq!(
        store
            .ensure("skiff.local/busybox", PullPolicy::Never)
            .await
            .unwrap(),
        image
    );

    let container = tmp.path().join("c1");
    {
        let mounted = Mounted::new(&store, &image, &container);
        assert_eq!(mounted.run(&["/bin/busybox", "echo", "hello"]), "hello\n");
        assert_eq!(
            mounted.run(&[
                "/bin/sh",
                "-c",
                "grep -c : /etc/passwd; cat /etc/group | wc -l"
            ]),
            "2\n2\n"
        );
        assert!(mounted.rootfs.join("var/www").is_dir());
        // Mounting again is a no-op; writes land in the upper dir, not the layer.
        assert_eq!(
            store.mount_rootfs(&image, &container).unwrap(),
            mounted.rootfs
        );
        mounted.run(&["/bin/sh", "-c", "echo x > /tmp/written"]);
        assert!(container.join("upper/tmp/written").is_file());
        assert!(!image.layers[0].join("tmp/written").exists());
    }
    assert!(fs::read_dir(container.join("rootfs"))
        .unwrap()
        .next()
        .is_none());
    ImageStore::unmount_rootfs(&container).unwrap(); // idempotent

    // The CLI lists it; removal deletes its layer.
    run_cli(&agent_root, ImageCmd::List).await.unwrap();
    store.remove("skiff.local/busybox:latest").unwrap();
    assert!(store.list().is_empty());
    assert!(!image.layers[0].exists());
    assert!(matches!(
        store.remove("skiff.local/busybox:latest"),
        Err(ImageError::NotPresent { .. })
    ));
}

#[test]
fn imported_oci_layout_whiteouts_hide_lower_files() {
    skip_unless!(true, &["busybox", "chroot", "timeout"]);
    let tmp = tempdir();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("layout");
    write_layout(&layout, "skiff.local/test:1", &whiteout_layers(), true);

    let refs = store.import(&layout).unwrap();
    assert_eq!(refs, ["skiff.local/test:1"]);
    let image = store.get("skiff.local/test:1").unwrap();
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(image.config.user.as_deref(), Some("0:0"));
    assert_eq!(image.config.env, ["PATH=/bin", "A=1"]);
    check_whiteouts(&store, &image, &tmp.path().join("c"));
}

/// Mounts `image` (from [`whiteout_layers`]) and checks what the container sees.
fn check_whiteouts(store: &ImageStore, image: &LocalImage, container: &Path) {
    let mounted = Mounted::new(store, image, container);
    assert_eq!(mounted.run(&["/bin/ls", "/"]), "bin\nd\netc\nkept\n");
    assert_eq!(mounted.run(&["/bin/ls", "/d"]), "new\n");
    assert_eq!(mounted.run(&["/bin/cat", "/d/new", "/kept"]), "newkept");
    assert!(!mounted.rootfs.join("gone").exists());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(mounted.rootfs.join("kept"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn skopeo_archives_import_like_the_layout() {
    skip_unless!(true, &["busybox", "chroot", "timeout", "skopeo"]);
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    write_layout(&layout, "skiff.local/test:1", &whiteout_layers(), false);
    let src = format!("oci:{}:skiff.local/test:1", layout.display());
    let docker_tar = tmp.path().join("docker.tar");
    let oci_tar = tmp.path().join("oci.tar");
    run_tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            &src,
            &format!("docker-archive:{}:skiff.local/test:2", docker_tar.display()),
        ],
    );
    run_tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            &src,
            &format!("oci-archive:{}:skiff.local/test:3", oci_tar.display()),
        ],
    );

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    assert_eq!(store.import(&docker_tar).unwrap(), ["skiff.local/test:2"]);
    assert_eq!(store.import(&oci_tar).unwrap(), ["skiff.local/test:3"]);
    let from_docker = store.get("skiff.local/test:2").unwrap();
    let from_oci = store.get("skiff.local/test:3").unwrap();
    // The same layers, unpacked once and shared.
    assert_eq!(from_docker.layers, from_oci.layers);
    assert_eq!(
        fs::read_dir(tmp.path().join("store/layers"))
            .unwrap()
            .count(),
        3
    );
    check_whiteouts(&store, &from_docker, &tmp.path().join("c2"));
    check_whiteouts(&store, &from_oci, &tmp.path().join("c3"));
    // Nothing left in staging.
    assert_eq!(
        fs::read_dir(tmp.path().join("store/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn a_layer_escaping_with_dot_dot_is_refused() {
    skip_unless!(false, &[]);
    let tmp = tempdir();
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let evil = LayerTar::new()
        .file("ok", b"fine", 0o644)
        .file("../escape", b"pwned", 0o644)
        .build();
    let layout = tmp.path().join("layout");
    write_layout(&layout, "skiff.local/evil:1", &[evil], true);
    let err = store.import(&layout).unwrap_err();
    assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("../escape"), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(!store_dir.join("escape").exists() && !tmp.path().join("escape").exists());
    assert!(store.list().is_empty());
    assert_eq!(fs::read_dir(store_dir.join("layers")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(store_dir.join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    skip_unless!(false, &[]);
    let tmp = tempdir();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let layout = tmp.path().join("layout");
    let layer = LayerTar::new().file("a", b"original", 0o644).build();
    let digests = write_layout(&layout, "skiff.local/tampered:1", &[layer], false);
    // Same length, other content, under the original name.
    let blob = layout.join("blobs/sha256").join(&digests[0][7..]);
    let tampered = LayerTar::new().file("a", b"tampered", 0o644).build();
    fs::write(&blob, tampered).unwrap();
    let err = store.import(&layout).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.get("skiff.local/tampered:1").is_none());
    assert_eq!(
        fs::read_dir(tmp.path().join("store/layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    skip_unless!(false, &[]);
    let tmp = tempdir();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import(&tmp.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, b"this is not a tarball at all").unwrap();
    let err = store.import(&junk).unwrap_err();
    assert!(matches!(err, ImageError::Invalid { .. }), "{err}");
    let empty_dir = tmp.path().join("empty");
    fs::create_dir(&empty_dir).unwrap();
    let err = store.import(&empty_dir).unwrap_err();
    assert!(
        err.to_string().contains("neither an OCI image layout"),
        "{err}"
    );
    let err = store.get("Not/Valid").is_none();
    assert!(err);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(store.ensure("UPPER", PullPolicy::IfNotPresent))
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidImageName");
    let err = rt
        .block_on(store.ensure("skiff.local/absent:1", PullPolicy::Never))
        .unwrap_err();
    assert_eq!(err.reason(), "ErrImageNeverPull");
}

/// A `docker-registry` on a free loopback port, storage in `dir`, logging requests to
/// `dir/registry.log`.
struct Registry {
    addr: String,
    storage: PathBuf,
    log: PathBuf,
    _process: KillOnDrop,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let log_file = fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start docker-registry");
        let process = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            addr,
            storage,
            log,
            _process: process,
        }
    }

    /// How many GET requests for `uri` the registry logged (logrus quotes a value
    /// only when it holds characters such as ':').
    fn requests(&self, uri: &str) -> usize {
        let quoted = format!("http.request.uri=\"{uri}\"");
        let bare = format!("http.request.uri={uri} ");
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("response completed"))
            .filter(|l| l.contains("http.request.method=GET"))
            .filter(|l| l.contains(&quoted) || l.contains(&bare))
            .count()
    }
}

#[tokio::test]
async fn pulls_from_a_local_registry() {
    skip_unless!(
        true,
        &["busybox", "chroot", "timeout", "skopeo", "docker-registry"]
    );
    tokio::time::timeout(TEST_TIMEOUT, pull_scenario())
        .await
        .expect("the pull test took too long");
}

async fn pull_scenario() {
    let tmp = tempdir();
    let registry = Registry::start(&tmp.path().join("registry"));
    let layout = tmp.path().join("layout");
    let layers = whiteout_layers();
    let digests = write_layout(&layout, "skiff.local/test:1", &layers, true);
    run_tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:skiff.local/test:1", layout.display()),
            &format!("docker://{}/busybox:1", registry.addr),
        ],
    );
    let reference = format!("{}/busybox:1", registry.addr);

    // Five concurrent ensures: one pull, one manifest request.
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let ensures = (0..5).map(|_| store.ensure(&reference, PullPolicy::IfNotPresent));
    let images = futures::future::try_join_all(ensures).await.unwrap();
    assert!(images.iter().all(|i| *i == images[0]));
    let image = &images[0];
    assert_eq!(image.reference, reference);
    assert_eq!(image.layers.len(), 3);
    let manifest_uri = "/v2/busybox/manifests/1";
    assert_eq!(registry.requests(manifest_uri), 1);
    check_whiteouts(&store, image, &tmp.path().join("c"));
    {
        let mounted = Mounted::new(&store, image, &tmp.path().join("c"));
        assert_eq!(mounted.run(&["/bin/busybox", "echo", "pulled"]), "pulled\n");
    }

    // `Always` asks again but downloads no layer again.
    let blob_uri = format!("/v2/busybox/blobs/{}", digests[0]);
    assert_eq!(registry.requests(&blob_uri), 1);
    let again = store.ensure(&reference, PullPolicy::Always).await.unwrap();
    assert_eq!(again, *image);
    assert_eq!(registry.requests(manifest_uri), 2);
    assert_eq!(registry.requests(&blob_uri), 1);

    // By digest, found locally without a pull.
    let manifest = fs::read(
        registry
            .storage
            .join("docker/registry/v2/repositories/busybox/_manifests/tags/1/current/link"),
    )
    .unwrap();
    let by_digest = format!(
        "{}/busybox@{}",
        registry.addr,
        String::from_utf8_lossy(&manifest)
    );
    assert_eq!(store.get(&by_digest).unwrap().id, image.id);

    // Unknown tag: NotFound, reason ErrImagePull.
    let err = store
        .pull(&format!("{}/busybox:nope", registry.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");

    // A registry serving a corrupted layer: refused, nothing kept.
    let hex = &digests[1][7..];
    let data = registry.storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&data, bytes).unwrap();
    let fresh = ImageStore::open(&tmp.path().join("fresh")).unwrap();
    let err = fresh.pull(&reference).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(fresh.get(&reference).is_none());
    assert_eq!(
        fs::read_dir(tmp.path().join("fresh/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn an_archive_cannot_point_outside_itself() {
    skip_unless!(false, &[]);
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    let layer = LayerTar::new().file("a", b"a", 0o644).build();
    let digests = write_layout(&layout, "skiff.local/sneaky:1", &[layer], false);
    // The layer blob becomes a symlink out of the archive, to an endless device.
    let blob = layout.join("blobs/sha256").join(&digests[0][7..]);
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let archive = tmp.path().join("sneaky.tar");
    let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &layout).unwrap();
    builder.into_inner().unwrap();

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import(&archive).unwrap_err();
    assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("outside the archive"), "{err}");
    // A layout directory given directly may use symlinks, but not to a device.
    let err = store.import(&layout).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_says_why() {
    skip_unless!(false, &[]);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempdir();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store
        .ensure(&format!("127.0.0.1:{port}/x:1"), PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Transport { .. }), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    let text = err.to_string();
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    eprintln!("{text}");
}

/// Two store handles on one directory stand in for the agent and a `skiff image`
/// process: concurrent imports of one image all succeed and share one layer.
#[test]
fn concurrent_imports_of_one_image_share_its_layers() {
    skip_unless!(false, &[]);
    let tmp = tempdir();
    let layout = tmp.path().join("layout");
    let layers = vec![
        LayerTar::new().file("a", &[7u8; 100_000], 0o644).build(),
        LayerTar::new().file("b", b"b", 0o644).build(),
    ];
    write_layout(&layout, "skiff.local/shared:1", &layers, true);
    let root = tmp.path().join("store");
    let stores = [
        ImageStore::open(&root).unwrap(),
        ImageStore::open(&root).unwrap(),
    ];
    std::thread::scope(|scope| {
        for i in 0..6 {
            let store = &stores[i % 2];
            let layout = &layout;
            scope.spawn(move || {
                assert_eq!(store.import(layout).unwrap(), ["skiff.local/shared:1"]);
            });
        }
    });
    assert_eq!(fs::read_dir(root.join("layers")).unwrap().count(), 2);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    let image = stores[0].get("skiff.local/shared:1").unwrap();
    assert_eq!(stores[1].list(), vec![image.clone()]);
    assert_eq!(fs::read(image.layers[1].join("b")).unwrap(), b"b");
}
