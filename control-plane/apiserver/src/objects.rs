//! How objects sit in the store: keys and encoding.
//!
//! Key: `/registry/<resource>/<namespace>/<name>` for namespaced resources and
//! `/registry/<resource>/<name>` for cluster-scoped ones. Value: the object's JSON without
//! `metadata.resourceVersion` — the resourceVersion *is* the key's mod_revision, filled in
//! on every read, so it can never disagree with the store.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::store::Kv;

/// The store key of an object.
pub fn key(res: &ResourceInfo, namespace: &str, name: &str) -> Vec<u8> {
    if res.namespaced {
        format!("/registry/{}/{}/{}", res.plural, namespace, name).into_bytes()
    } else {
        format!("/registry/{}/{}", res.plural, name).into_bytes()
    }
}

/// The key prefix of a list: every object of the resource, or those of one namespace.
pub fn prefix(res: &ResourceInfo, namespace: Option<&str>) -> Vec<u8> {
    match namespace {
        Some(ns) if res.namespaced => format!("/registry/{}/{}/", res.plural, ns).into_bytes(),
        _ => format!("/registry/{}/", res.plural).into_bytes(),
    }
}

/// The object stored in `kv`, with its resourceVersion filled in.
pub fn decode(kv: &Kv) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object at {} is not valid JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// The bytes to store for `obj` (its resourceVersion left out).
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// `metadata.<field>` as a string ("" when absent).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The object's metadata as a mutable map, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Default::default());
    }
    let map = obj.as_object_mut().expect("object");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    meta.as_object_mut().expect("object")
}

/// Parses a resourceVersion given by a client: `""` → None; otherwise a non-negative integer.
pub fn parse_rv(rv: &str) -> Result<Option<i64>, ApiError> {
    if rv.is_empty() {
        return Ok(None);
    }
    match rv.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(ApiError::bad_request(format!(
            "invalid resource version: {rv:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    #[test]
    fn keys_and_round_trip() {
        let pods = lookup("", "v1", "pods").unwrap();
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(key(pods, "default", "web"), b"/registry/pods/default/web");
        assert_eq!(key(nodes, "", "n1"), b"/registry/nodes/n1");
        assert_eq!(
            prefix(pods, Some("kube-system")),
            b"/registry/pods/kube-system/"
        );
        assert_eq!(prefix(pods, None), b"/registry/pods/");

        let obj = json!({"metadata": {"name": "web", "resourceVersion": "7"}, "spec": {}});
        let bytes = encode(&obj);
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let kv = Kv {
            key: key(pods, "default", "web"),
            value: bytes,
            mod_revision: 42,
            ..Default::default()
        };
        let back = decode(&kv).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "42");
        assert_eq!(meta_str(&back, "name"), "web");
    }

    #[test]
    fn resource_versions() {
        assert_eq!(parse_rv("").unwrap(), None);
        assert_eq!(parse_rv("12").unwrap(), Some(12));
        assert_eq!(parse_rv("x").unwrap_err().code, 400);
        assert_eq!(parse_rv("-1").unwrap_err().code, 400);
    }
}

/// An object as the watch cache and lists hold it: its JSON exactly as served
/// (resourceVersion included), and a small view with the fields that filters read.
///
/// Why: a parsed `serde_json::Value` costs about ten times the JSON it came from (a
/// 2.4 KB pod is ~29 KiB as a tree); the JSON is what lists and watches send anyway, so it
/// is kept encoded and parsed only when a request needs the whole object (tables,
/// patches).
#[derive(Debug)]
pub struct Cached {
    /// The object's JSON.
    pub json: bytes::Bytes,
    /// `apiVersion`, `kind`, the metadata fields filters and controllers read (name,
    /// namespace, uid, labels, resourceVersion, deletionTimestamp, generation), and the
    /// resource's field-selector paths.
    pub view: Value,
    /// The object's resourceVersion.
    pub rev: i64,
}

/// Metadata fields copied into a [`Cached`] view.
const VIEW_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "labels",
    "resourceVersion",
    "deletionTimestamp",
    "generation",
    "finalizers",
];

impl Cached {
    /// Encodes `obj` (which carries its resourceVersion) for resource `res`.
    pub fn new(res: &ResourceInfo, obj: &Value) -> Cached {
        let json = bytes::Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
        let mut view = serde_json::Map::new();
        for f in ["apiVersion", "kind"] {
            if let Some(v) = obj.get(f) {
                view.insert(f.into(), v.clone());
            }
        }
        let mut meta = serde_json::Map::new();
        if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
            for f in VIEW_META {
                if let Some(v) = m.get(*f) {
                    meta.insert((*f).into(), v.clone());
                }
            }
        }
        view.insert("metadata".into(), Value::Object(meta));
        let mut view = Value::Object(view);
        let extra: &[&str] = if res.kind == "Service" {
            &["spec.clusterIP"]
        } else {
            &[]
        };
        for path in crate::selector::supported_fields(res.group, res.plural)
            .iter()
            .chain(extra)
        {
            if path.starts_with("metadata.") {
                continue;
            }
            let pointer = format!("/{}", path.replace('.', "/"));
            if let Some(v) = obj.pointer(&pointer) {
                set_path(&mut view, path, v.clone());
            }
        }
        let rev = meta_str(obj, "resourceVersion").parse().unwrap_or(0);
        Cached { json, view, rev }
    }

    /// The whole object, parsed.
    pub fn object(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// A copy with another resourceVersion (a deleted object's last state carries the
    /// deletion's revision).
    pub fn with_rev(&self, res: &ResourceInfo, rev: i64) -> Cached {
        let mut obj = self.object();
        set_resource_version(&mut obj, rev);
        Cached::new(res, &obj)
    }
}

/// Sets `a.b.c` in `v`, creating objects on the way.
fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let map = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            map.insert((*p).to_string(), value);
            return;
        }
        cur = map
            .entry((*p).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}
