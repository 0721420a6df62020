//! The OpenAPI v3 documents, generated from the `k8s-openapi` types' JSON schemas.
//!
//! kubectl reads them to decide how to validate (`fieldValidation` on PATCH operations
//! tagged with `x-kubernetes-group-version-kind` means the server validates), to compute
//! `kubectl apply`'s strategic merge patches (`x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key`, taken from the same table the server patches with),
//! and for `kubectl explain`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};

use crate::patch::field_patch_meta;
use crate::resources::{group_versions, ResourceInfo, RESOURCES};
use crate::types::{definition_name, definitions};

/// A generated document: its bytes and their hash (for `?hash=` URLs).
pub struct Doc {
    pub bytes: Arc<Vec<u8>>,
    pub hash: String,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn docs() -> &'static BTreeMap<String, Doc> {
    static DOCS: OnceLock<BTreeMap<String, Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let schemas = decorated_schemas();
        group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = document(g, v, &schemas);
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                (
                    gv_path(g, v),
                    Doc {
                        bytes: Arc::new(bytes),
                        hash: format!("{:016X}", h.finish()),
                    },
                )
            })
            .collect()
    })
}

/// `/openapi/v3`: where each group-version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|(p, d)| {
            (
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", d.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/group/version>`.
pub fn get(path: &str) -> Option<&'static Doc> {
    docs().get(path.trim_matches('/'))
}

/// The schemas with Kubernetes's extensions added.
fn decorated_schemas() -> Map<String, Value> {
    let mut defs = definitions().clone();
    for (name, schema) in defs.iter_mut() {
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            for (field, prop) in props.iter_mut() {
                if let Some(meta) = field_patch_meta(name, field) {
                    if let Some(p) = prop.as_object_mut() {
                        p.insert("x-kubernetes-patch-strategy".into(), json!(meta.strategy));
                        if let Some(k) = meta.merge_key {
                            p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
                        }
                    }
                }
            }
        }
    }
    for r in RESOURCES {
        if let Some(def) = definition_name(r.group, r.kind) {
            if let Some(s) = defs.get_mut(&def).and_then(Value::as_object_mut) {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
                );
            }
        }
    }
    defs
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "schema": {"type": "string", "uniqueItems": true}, "required": location == "path"})
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted. Valid value: All."),
        param("fieldManager", "query", "A name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "query", "How the server treats unknown fields in the request: Ignore, Warn (default) or Strict."),
    ]
}

fn op(
    r: &ResourceInfo,
    action: &str,
    kind_def: &str,
    id: String,
    body: bool,
    extra: Vec<Value>,
) -> Value {
    let schema_ref = json!({"$ref": format!("#/components/schemas/{kind_def}")});
    let mut o = json!({
        "operationId": id,
        "tags": [if r.group.is_empty() { "core_v1".to_string() } else { format!("{}_{}", r.group.replace('.', "_"), r.version) }],
        "parameters": extra,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if body {
        let content = if action == "patch" {
            let patch = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
            json!({"application/json-patch+json": patch, "application/merge-patch+json": patch, "application/strategic-merge-patch+json": patch, "application/apply-patch+yaml": patch})
        } else {
            json!({"application/json": {"schema": schema_ref}})
        };
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

fn document(group: &str, version: &str, schemas: &Map<String, Value>) -> Value {
    let mut paths = Map::new();
    let prefix = format!("/{}", gv_path(group, version));
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let Some(def) = definition_name(r.group, r.kind) else {
            continue;
        };
        let (coll, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        let mut path_params = vec![];
        if r.namespaced {
            path_params.push(param(
                "namespace",
                "path",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        let k = r.kind;
        paths.insert(coll.clone(), json!({
            "get": op(r, "list", &def, format!("list{k}"), false, vec![param("labelSelector", "query", "label selector"), param("fieldSelector", "query", "field selector"), param("limit", "query", "page size"), param("continue", "query", "continue token"), param("watch", "query", "watch for changes"), param("resourceVersion", "query", "resource version")]),
            "post": op(r, "post", &def, format!("create{k}"), true, write_params()),
            "delete": op(r, "deletecollection", &def, format!("deletecollection{k}"), false, vec![]),
            "parameters": path_params,
        }));
        let mut item_params = vec![param("name", "path", &format!("name of the {k}"))];
        if r.namespaced {
            item_params.push(param(
                "namespace",
                "path",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        let mut patch_params = write_params();
        patch_params.push(param(
            "force",
            "query",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(item.clone(), json!({
            "get": op(r, "get", &def, format!("read{k}"), false, vec![]),
            "put": op(r, "put", &def, format!("replace{k}"), true, write_params()),
            "patch": op(r, "patch", &def, format!("patch{k}"), true, patch_params.clone()),
            "delete": op(r, "delete", &def, format!("delete{k}"), false, vec![param("gracePeriodSeconds", "query", "grace period"), param("propagationPolicy", "query", "Orphan, Background or Foreground")]),
            "parameters": item_params.clone(),
        }));
        for sub in r
            .subresources
            .iter()
            .filter(|s| matches!(**s, "status" | "scale"))
        {
            let sub_def = if *sub == "scale" {
                definition_name("autoscaling", "Scale").unwrap_or_default()
            } else {
                def.clone()
            };
            paths.insert(format!("{item}/{sub}"), json!({
                "get": op(r, "get", &sub_def, format!("read{k}{}", capitalize(sub)), false, vec![]),
                "put": op(r, "put", &sub_def, format!("replace{k}{}", capitalize(sub)), true, write_params()),
                "patch": op(r, "patch", &sub_def, format!("patch{k}{}", capitalize(sub)), true, patch_params.clone()),
                "parameters": item_params.clone(),
            }));
        }
        if r.namespaced {
            paths.insert(
                format!("{prefix}/{}", r.plural),
                json!({
                    "get": op(r, "list", &def, format!("list{k}ForAllNamespaces"), false, vec![]),
                }),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_patch_with_field_validation_and_gvk() {
        let idx = index();
        let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc: Value = serde_json::from_slice(&get("apis/apps/v1").unwrap().bytes).unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let dep = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(dep["x-kubernetes-group-version-kind"][0]["group"], "apps");
        assert!(get("api/v1").is_some());
        assert!(get("apis/nope/v1").is_none());
    }
}
