//! Kubernetes protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`),
//! turned into the JSON the rest of the server takes.
//!
//! kubectl's typed generators (`kubectl create namespace | configmap | secret generic |
//! deployment | service`) encode their object as Kubernetes protobuf: the 4 bytes
//! `k8s\0`, then a `runtime.Unknown` envelope naming the object's apiVersion and kind and
//! carrying the object's own message in `raw`. [`decode_body`] decodes both against our
//! declarations of those messages (`skiff_proto::K8S_DESCRIPTORS`, from `proto/k8s/`) with
//! `prost-reflect`, and writes the object as the JSON Kubernetes would serve for it. The
//! body then goes through the same decoding, defaulting and validation as a JSON body.
//!
//! # Nothing dropped
//! Our declarations cover a subset of each kind's fields. A field on the wire that they do
//! not declare — anywhere in the object — fails the request with 415 naming the message
//! and field number, so the client can send JSON instead; the server never stores an
//! object with part of what the client sent silently missing.
//!
//! # JSON shape
//! Kubernetes's proto field names are its JSON names and are used as the keys. `int64`
//! is a JSON number, `bytes` base64 (Secret `data`, ConfigMap `binaryData`), maps are
//! objects, `Time` an RFC 3339 string at second precision (the zero time, which
//! Kubernetes writes as an empty message, is omitted, as Kubernetes 1.33+ serves it),
//! `IntOrString` a number or a string, `Quantity` its string. Which zero values are kept
//! follows Kubernetes's JSON tags through the proto3 presence of each field (see
//! `proto/k8s/README.md`): `name: ""` and `generation: 0` on the wire are omitted,
//! `replicas: 0` is kept, and message fields are kept even when empty (`resources: {}`).

use std::sync::OnceLock;

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value as Pv,
};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The envelope message after [`MAGIC`].
const UNKNOWN: &str = "io.k8s.apimachinery.pkg.runtime.Unknown";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// (apiVersion, kind, message) of every kind decoded from protobuf.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("v1", "Namespace", "io.k8s.api.core.v1.Namespace"),
    ("v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap"),
    ("v1", "Secret", "io.k8s.api.core.v1.Secret"),
    ("v1", "Service", "io.k8s.api.core.v1.Service"),
    ("apps/v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
];

/// What the client can do instead, appended to every 415.
const SEND_JSON: &str = "send JSON (e.g. kubectl create -f / kubectl apply -f with a manifest)";

/// Whether `content_type` (a `Content-Type` header value, parameters allowed) is
/// Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// Decodes a Kubernetes protobuf request body into the JSON object Kubernetes would serve
/// for it, `apiVersion` and `kind` included.
///
/// Contract:
/// - the body must start with [`MAGIC`] and hold a `runtime.Unknown` whose `typeMeta` is
///   one of [`KINDS`] and whose `raw` is that kind's message, uncompressed;
/// - every field present on the wire, at any depth, must be declared in `proto/k8s/`.
///
/// Errors: 400 BadRequest for bytes that are not a well-formed body (no magic, broken
/// protobuf, wrong wire types, invalid UTF-8, no kind); 415 UnsupportedMediaType for a
/// well-formed body the server does not decode (another kind, a content encoding, a field
/// it does not know), with a message naming what and saying to send JSON. Never panics.
pub fn decode_body(bytes: &[u8]) -> Result<Value, ApiError> {
    let Some(envelope) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(ApiError::bad_request(
            "the protobuf body does not start with the Kubernetes magic \"k8s\\x00\"",
        ));
    };
    let unknown = decode_message(
        message(UNKNOWN)?,
        envelope,
        "the envelope (runtime.Unknown)",
    )?;
    reject_unknown_fields(&unknown, "the envelope")?;
    let type_meta = match unknown.get_field_by_name("typeMeta").as_deref() {
        Some(Pv::Message(m)) => {
            reject_unknown_fields(m, "the envelope's typeMeta")?;
            m.clone()
        }
        _ => DynamicMessage::new(message("io.k8s.apimachinery.pkg.runtime.TypeMeta")?),
    };
    let api_version = string_field(&type_meta, "apiVersion");
    let kind = string_field(&type_meta, "kind");
    let encoding = string_field(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(unsupported(format!(
            "protobuf bodies with contentEncoding {encoding:?} are not supported by this server; {SEND_JSON}"
        )));
    }
    let content_type = string_field(&unknown, "contentType");
    if !content_type.is_empty() && !is_protobuf(&content_type) {
        return Err(unsupported(format!(
            "protobuf envelopes holding {content_type:?} are not supported by this server; {SEND_JSON}"
        )));
    }
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "the protobuf body does not name its kind (runtime.Unknown typeMeta)",
        ));
    }
    let Some(&(_, _, name)) = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        let served: Vec<String> = KINDS.iter().map(|(v, k, _)| format!("{v} {k}")).collect();
        return Err(unsupported(format!(
            "protobuf bodies of {api_version} {kind} are not supported by this server (it decodes {}); {SEND_JSON}",
            served.join(", ")
        )));
    };
    let raw = match unknown.get_field_by_name("raw").as_deref() {
        Some(Pv::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    let object = decode_message(message(name)?, &raw, &format!("the {kind}"))?;
    let mut json = match message_json(&object, "")? {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    json.insert("apiVersion".into(), Value::String(api_version));
    json.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(json))
}

/// The descriptors of `proto/k8s/`, decoded once. An error here is a build defect (the
/// descriptor set is compiled into `skiff-proto`), reported as 500 rather than a panic.
fn pool() -> Result<&'static DescriptorPool, ApiError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(skiff_proto::K8S_DESCRIPTORS).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ApiError::internal(format!("the Kubernetes protobuf descriptors: {e}")))
}

fn message(name: &str) -> Result<MessageDescriptor, ApiError> {
    pool()?
        .get_message_by_name(name)
        .ok_or_else(|| ApiError::internal(format!("no protobuf descriptor for {name}")))
}

fn decode_message(
    desc: MessageDescriptor,
    bytes: &[u8],
    what: &str,
) -> Result<DynamicMessage, ApiError> {
    DynamicMessage::decode(desc, bytes)
        .map_err(|e| ApiError::bad_request(format!("the protobuf body is malformed: {what}: {e}")))
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    match msg.get_field_by_name(name).as_deref() {
        Some(Pv::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(415, "UnsupportedMediaType", message)
}

/// 415 for the first field of `msg` (not of its submessages) that its descriptor does not
/// declare. `at` says where `msg` is, for the message.
fn reject_unknown_fields(msg: &DynamicMessage, at: &str) -> Result<(), ApiError> {
    match msg.unknown_fields().next() {
        None => Ok(()),
        Some(field) => Err(unsupported(format!(
            "protobuf field {} of {} is not supported by this server; {SEND_JSON} (the field is in {at})",
            field.number(),
            msg.descriptor().full_name(),
        ))),
    }
}

/// `path.name`, or `name` at the top.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The JSON of one message at `path` (a JSON path, for error messages). `None` for a
/// value Kubernetes does not serve at all (the zero `Time`).
fn message_json(msg: &DynamicMessage, path: &str) -> Result<Option<Value>, ApiError> {
    let at = if path.is_empty() { "the object" } else { path };
    reject_unknown_fields(msg, at)?;
    match msg.descriptor().full_name() {
        TIME => return time_json(msg, at),
        INT_OR_STRING => return int_or_string_json(msg, at).map(Some),
        QUANTITY => return Ok(Some(Value::String(string_field(msg, "string")))),
        _ => {}
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let name = field.name();
        let here = join(path, name);
        let json = match value {
            // A message field may have no JSON at all (the zero Time): omit the key.
            Pv::Message(m) => match message_json(m, &here)? {
                Some(v) => v,
                None => continue,
            },
            other => value_json(other, &here)?,
        };
        out.insert(name.to_string(), json);
    }
    Ok(Some(Value::Object(out)))
}

/// The JSON of one value: a scalar, a list, a map, or a message (`null` for the zero
/// `Time` inside a list or map, where it cannot be omitted).
fn value_json(value: &Pv, path: &str) -> Result<Value, ApiError> {
    Ok(match value {
        Pv::Bool(b) => Value::Bool(*b),
        Pv::I32(n) | Pv::EnumNumber(n) => Value::from(*n),
        Pv::I64(n) => Value::from(*n),
        Pv::U32(n) => Value::from(*n),
        Pv::U64(n) => Value::from(*n),
        Pv::F32(x) => Value::from(f64::from(*x)),
        Pv::F64(x) => Value::from(*x),
        Pv::String(s) => Value::String(s.clone()),
        Pv::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Pv::Message(m) => message_json(m, path)?.unwrap_or(Value::Null),
        Pv::List(items) => {
            let mut array = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                array.push(value_json(item, &format!("{path}[{i}]"))?);
            }
            Value::Array(array)
        }
        Pv::Map(entries) => {
            let mut object = Map::new();
            for (key, item) in entries {
                let key = map_key(key);
                let item = value_json(item, &format!("{path}[{key}]"))?;
                object.insert(key, item);
            }
            Value::Object(object)
        }
    })
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn int_field(msg: &DynamicMessage, name: &str) -> i64 {
    match msg.get_field_by_name(name).as_deref() {
        Some(Pv::I64(n)) => *n,
        Some(Pv::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

/// `metav1.Time`: RFC 3339 in UTC at second precision, as Kubernetes serves it (the
/// nanoseconds are not served); `None` for the zero time.
fn time_json(msg: &DynamicMessage, at: &str) -> Result<Option<Value>, ApiError> {
    let seconds = int_field(msg, "seconds");
    if seconds == 0 && int_field(msg, "nanos") == 0 {
        return Ok(None);
    }
    let ts = jiff::Timestamp::from_second(seconds).map_err(|e| {
        ApiError::bad_request(format!(
            "the protobuf body is malformed: the time in {at} ({seconds} s) is out of range: {e}"
        ))
    })?;
    Ok(Some(Value::String(
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )))
}

/// `IntOrString`: `intVal` as a number for type 0, `strVal` as a string for type 1.
fn int_or_string_json(msg: &DynamicMessage, at: &str) -> Result<Value, ApiError> {
    match int_field(msg, "type") {
        0 => Ok(Value::from(int_field(msg, "intVal"))),
        1 => Ok(Value::String(string_field(msg, "strVal"))),
        other => Err(ApiError::bad_request(format!(
            "the protobuf body is malformed: the IntOrString in {at} has type {other}, neither 0 (int) nor 1 (string)"
        ))),
    }
}

#[cfg(test)]
mod tests;
