//! The OCI image-spec and Docker schema 2 documents this store reads and writes:
//! index / manifest list, manifest, image config, and the docker-archive
//! `manifest.json`. Deliberately tolerant (unknown fields ignored, optional fields
//! defaulted) because registries and tools differ in what they fill in; what the store
//! relies on is checked by [`Manifest::parse`] and [`ConfigFile::parse`].

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use super::reference::validate_digest;
use super::ImageConfig;

/// `application/vnd.oci.image.index.v1+json`
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.config.v1+json`
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's manifest list (the index's counterpart).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's schema 1 manifests (signed and not), which this store does not support.
pub const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// The `Accept` header for manifest requests: every type [`Document::parse`] reads.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The annotation carrying an image's name in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and `docker save`'s) full image name annotation.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    #[serde(default)]
    pub size: i64,
    /// Where a "foreign" layer can be downloaded; set only on non-distributable layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Free-form annotations (`org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// Set on an index's entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`, `windows`, …
    #[serde(default)]
    pub os: String,
    /// `v8` for arm64, `v7` for arm, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`OCI_INDEX`] or [`DOCKER_LIST`]; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests, per platform or per name.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2: the same shape).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`OCI_MANIFEST`] or [`DOCKER_MANIFEST`]; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, lowest first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A manifest-endpoint or layout document: either an index or a manifest.
#[derive(Debug, Clone)]
pub enum Document {
    /// Several manifests to choose from.
    Index(Index),
    /// One image.
    Manifest(Manifest),
}

impl Document {
    /// Parses `bytes` as an index or manifest. `content_type` (an HTTP header or the
    /// descriptor's media type, may be empty) decides; failing that the document's own
    /// `mediaType`, failing that its shape (`manifests` vs `layers`).
    ///
    /// # Errors
    /// [`ImageError::Invalid`] for malformed JSON, [`ImageError::Unsupported`] for
    /// schema 1 and unknown media types.
    pub fn parse(what: &str, content_type: &str, bytes: &[u8]) -> Result<Document, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            schema_version: Option<u32>,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
            #[serde(default)]
            config: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::invalid(what, format!("not a JSON manifest: {e}")))?;
        let header = content_type.split(';').next().unwrap_or("").trim();
        let declared = match header {
            "" | "application/json" | "text/plain" | "application/octet-stream" => {
                probe.media_type.clone().unwrap_or_default()
            }
            h => h.to_string(),
        };
        if DOCKER_SCHEMA1.contains(&declared.as_str()) || probe.schema_version == Some(1) {
            return Err(ImageError::Unsupported {
                what: what.to_string(),
                reason: "Docker schema 1 manifests are not supported; push the image again \
                         with a current tool"
                    .into(),
            });
        }
        let is_index = match declared.as_str() {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            "" => probe.manifests.is_some() && probe.config.is_none(),
            other => {
                return Err(ImageError::Unsupported {
                    what: what.to_string(),
                    reason: format!("manifest media type {other:?}"),
                })
            }
        };
        let invalid = |e: serde_json::Error| ImageError::invalid(what, e.to_string());
        if is_index {
            let index: Index = serde_json::from_slice(bytes).map_err(invalid)?;
            for m in &index.manifests {
                validate_digest(&m.digest).map_err(|r| ImageError::invalid(what, r))?;
            }
            Ok(Document::Index(index))
        } else {
            let manifest: Manifest = serde_json::from_slice(bytes).map_err(invalid)?;
            manifest.validate(what)?;
            Ok(Document::Manifest(manifest))
        }
    }
}

impl Manifest {
    fn validate(&self, what: &str) -> Result<(), ImageError> {
        validate_digest(&self.config.digest)
            .map_err(|r| ImageError::invalid(what, format!("config: {r}")))?;
        for layer in &self.layers {
            validate_digest(&layer.digest)
                .map_err(|r| ImageError::invalid(what, format!("layer: {r}")))?;
            if layer.urls.as_ref().is_some_and(|u| !u.is_empty())
                || layer.media_type.contains("foreign")
                || layer.media_type.contains("nondistributable")
            {
                return Err(ImageError::Unsupported {
                    what: what.to_string(),
                    reason: format!("foreign layer {} ({})", layer.digest, layer.media_type),
                });
            }
        }
        Ok(())
    }
}

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConfigFile {
    /// `amd64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// The runtime defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    /// The layers' diff ids.
    pub rootfs: RootFs,
}

/// The `config` object of an image config: defaults for a container.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `User`: `name`, `uid`, `uid:gid`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `Env`: `K=V`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `sha256:<hex>` of each uncompressed layer tar, lowest first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    /// Parses and checks an image config.
    ///
    /// # Errors
    /// [`ImageError::Invalid`] for malformed JSON or diff ids;
    /// [`ImageError::Unsupported`] for a non-Linux image.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<ConfigFile, ImageError> {
        let config: ConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::invalid(what, format!("not an image config: {e}")))?;
        if !config.os.is_empty() && config.os != "linux" {
            return Err(ImageError::Unsupported {
                what: what.to_string(),
                reason: format!("built for os {:?}, this node runs linux", config.os),
            });
        }
        for d in &config.rootfs.diff_ids {
            validate_digest(d).map_err(|r| ImageError::invalid(what, format!("diff id: {r}")))?;
        }
        Ok(config)
    }

    /// The runtime defaults the agent uses.
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
        }
    }
}

/// One image in a docker-archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    /// Path of the config file inside the archive.
    pub config: String,
    /// `name:tag` names; may be null or empty for an untagged image.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars inside the archive, lowest first.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// The GOARCH name of this machine's architecture, as image platforms spell it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Picks the linux manifest for this host's architecture from an index; `None` if
/// there is none. Among several (arm variants), the first listed wins, except that
/// `arm64/v8` is preferred over other arm64 variants.
pub fn select_platform(index: &Index) -> Option<&Descriptor> {
    let arch = host_architecture();
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    candidates
        .iter()
        .find(|d| {
            arch == "arm64" && d.platform.as_ref().and_then(|p| p.variant.as_deref()) == Some("v8")
        })
        .or(candidates.first())
        .copied()
}

/// The platforms an index offers, for an error message.
pub fn platforms(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "none declared".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_docker_and_oci_documents_by_type_or_shape() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"x","digest":"{D}","size":1}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D}","size":2}}]}}"#
        );
        assert!(matches!(
            Document::parse("m", "", manifest.as_bytes()).unwrap(),
            Document::Manifest(m) if m.layers.len() == 1
        ));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
                {{"digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
            host_architecture()
        );
        let Document::Index(index) = Document::parse("i", "", index.as_bytes()).unwrap() else {
            panic!("not an index");
        };
        assert!(std::ptr::eq(
            select_platform(&index).unwrap(),
            &index.manifests[1]
        ));
        let schema1 = r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            Document::parse("s", "", schema1.as_bytes()),
            Err(ImageError::Unsupported { .. })
        ));
        assert!(matches!(
            Document::parse("j", "", b"{not json"),
            Err(ImageError::Invalid { .. })
        ));
    }

    #[test]
    fn config_defaults_and_checks() {
        let c = ConfigFile::parse(
            "c",
            br#"{"os":"linux","config":{"Cmd":["sh"],"Env":["A=1"],"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap()
        .image_config();
        assert_eq!(c.cmd, ["sh"]);
        assert_eq!(c.env, ["A=1"]);
        assert!(c.entrypoint.is_empty() && c.working_dir.is_none() && c.user.is_none());
        assert!(matches!(
            ConfigFile::parse("c", br#"{"os":"windows","rootfs":{"diff_ids":[]}}"#),
            Err(ImageError::Unsupported { .. })
        ));
    }
}
