//! The typed side of served objects: decoding request bodies through the `k8s-openapi`
//! types (so the server stores exactly what Kubernetes's types admit), finding unknown
//! fields for `fieldValidation`, and the JSON schemas behind the OpenAPI document.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldCause};

/// Calls `$m!(group, kind, type)` for every kind the server decodes.
macro_rules! for_each_kind {
    ($m:ident) => {
        $m!("", "Namespace", k8s_openapi::api::core::v1::Namespace);
        $m!("", "Node", k8s_openapi::api::core::v1::Node);
        $m!("", "Pod", k8s_openapi::api::core::v1::Pod);
        $m!("", "Service", k8s_openapi::api::core::v1::Service);
        $m!("", "Endpoints", k8s_openapi::api::core::v1::Endpoints);
        $m!("", "Event", k8s_openapi::api::core::v1::Event);
        $m!("", "ConfigMap", k8s_openapi::api::core::v1::ConfigMap);
        $m!("", "Secret", k8s_openapi::api::core::v1::Secret);
        $m!("", "Binding", k8s_openapi::api::core::v1::Binding);
        $m!("apps", "Deployment", k8s_openapi::api::apps::v1::Deployment);
        $m!("apps", "ReplicaSet", k8s_openapi::api::apps::v1::ReplicaSet);
        $m!(
            "coordination.k8s.io",
            "Lease",
            k8s_openapi::api::coordination::v1::Lease
        );
        $m!(
            "discovery.k8s.io",
            "EndpointSlice",
            k8s_openapi::api::discovery::v1::EndpointSlice
        );
        $m!(
            "autoscaling",
            "Scale",
            k8s_openapi::api::autoscaling::v1::Scale
        );
        $m!(
            "meta.k8s.io",
            "DeleteOptions",
            k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions
        );
    };
}

/// What went wrong decoding a body into its type.
#[derive(Debug)]
pub enum DecodeError {
    /// A required field is missing (a 422 Required cause at `field`).
    Missing { field: String },
    /// The JSON does not fit the type (a 400 with the path and serde's words).
    Type { path: String, message: String },
}

fn decode_as<T>(value: Value) -> Result<Value, DecodeError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(typed) => serde_json::to_value(&typed).map_err(|e| DecodeError::Type {
            path: String::new(),
            message: e.to_string(),
        }),
        Err(err) => {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = err.inner().to_string();
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                let field = if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                return Err(DecodeError::Missing { field });
            }
            Err(DecodeError::Type { path, message })
        }
    }
}

/// Decodes `value` as the k8s-openapi type of (`group`, `kind`) and encodes it again:
/// unknown fields are dropped, the shape is the type's. `None` when the kind is not one
/// the server knows.
pub fn roundtrip(group: &str, kind: &str, value: Value) -> Option<Result<Value, DecodeError>> {
    macro_rules! arm {
        ($g:literal, $k:literal, $t:ty) => {
            if group == $g && kind == $k {
                return Some(decode_as::<$t>(value));
            }
        };
    }
    for_each_kind!(arm);
    None
}

/// Decodes a request body for (`group`, `kind`): a 400 BadRequest for JSON that does not
/// fit the type and a 422 Invalid for missing required fields, both worded as Kubernetes
/// words them.
pub fn decode(
    group: &str,
    version: &str,
    kind: &str,
    name: &str,
    value: Value,
) -> Result<Value, ApiError> {
    match roundtrip(group, kind, value) {
        None => Err(ApiError::internal(format!(
            "no type registered for kind {kind}"
        ))),
        Some(Ok(v)) => Ok(v),
        Some(Err(DecodeError::Missing { field })) => Err(ApiError::invalid(
            group,
            kind,
            name,
            vec![FieldCause::required(field, "")],
        )),
        Some(Err(DecodeError::Type { path, message })) => {
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" at {path}")
            };
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {message}{at}"
            )))
        }
    }
}

/// The OpenAPI definition name of (`group`, `kind`), e.g. `io.k8s.api.core.v1.Pod`.
pub fn definition_name(group: &str, kind: &str) -> Option<String> {
    macro_rules! arm {
        ($g:literal, $k:literal, $t:ty) => {
            if group == $g && kind == $k {
                return Some(<$t as schemars::JsonSchema>::schema_name().into_owned());
            }
        };
    }
    for_each_kind!(arm);
    None
}

/// Every schema definition the served kinds reach, by definition name, in OpenAPI v3
/// form (`$ref: #/components/schemas/<name>`).
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
        macro_rules! arm {
            ($g:literal, $k:literal, $t:ty) => {
                let _ = gen.subschema_for::<$t>();
            };
        }
        for_each_kind!(arm);
        let _ = gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
        let _ = gen.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
        gen.take_definitions(true)
    })
}

/// Follows `$ref` and single-element `allOf` wrappers to the schema they stand for.
pub fn resolve(mut schema: &Value) -> &Value {
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            match definitions().get(name) {
                Some(s) => schema = s,
                None => return schema,
            }
        } else if let Some([one]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            schema = one;
        } else {
            break;
        }
    }
    schema
}

/// The paths of fields in `value` that the schema of (`group`, `kind`) does not know,
/// spelled as Kubernetes reports them (`spec.template.spec.containers[0].imagee`).
pub fn unknown_fields(group: &str, kind: &str, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(def) = definition_name(group, kind) {
        if let Some(schema) = definitions().get(&def) {
            walk(schema, value, String::new(), &mut out);
        }
    }
    out
}

fn walk(schema: &Value, value: &Value, path: String, out: &mut Vec<String>) {
    let schema = resolve(schema);
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                // Free-form (RawExtension, preserve-unknown-fields): anything goes.
                return;
            }
            for (k, v) in map {
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match props.and_then(|p| p.get(k)).or(additional) {
                    Some(child) => walk(child, v, child_path, out),
                    None => out.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(item_schema, v, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_drops_nothing_known_and_reports_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "imagee": "x"}]}});
        assert_eq!(
            unknown_fields("", "Pod", &pod),
            vec!["spec.containers[0].imagee"]
        );
        let back = decode("", "v1", "Pod", "p", pod).unwrap();
        assert!(back["spec"]["containers"][0].get("imagee").is_none());
        assert_eq!(back["spec"]["containers"][0]["image"], "busybox");

        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "three", "selector": {}, "template": {}}});
        let e = decode("apps", "v1", "Deployment", "d", bad).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("spec.replicas"), "{}", e.message);

        // k8s-openapi fills absent required fields with empty values; validation, not
        // decoding, reports them.
        let missing = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {}}});
        assert!(decode("apps", "v1", "Deployment", "d", missing).is_ok());
    }

    #[test]
    fn maps_and_free_form_fields_are_not_unknown() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}},
            "data": {"any.key": "v"}});
        assert!(unknown_fields("", "ConfigMap", &cm).is_empty());
        let d = json!({"metadata": {"name": "d", "bogus": 1}, "spec": {"template": {"spec": {"containers": [{"resources": {"limits": {"cpu": "1"}}}]}}}});
        assert_eq!(
            unknown_fields("apps", "Deployment", &d),
            vec!["metadata.bogus"]
        );
    }
}
