//! `metadata` validation shared by every kind (Kubernetes's `ValidateObjectMeta` and
//! `ValidateObjectMetaUpdate`), plus label maps and label selectors.

use serde_json::Value;

use super::names::{is_dns1123_label, is_label_value, is_qualified_name, NameRule};
use super::util::{
    arr, flag, int, invalid_each, obj, present, s, se, string_map, Causes, IMMUTABLE, IS_NEGATIVE,
};
use crate::error::FieldCause;

/// Total size allowed for all annotation keys and values of one object.
pub const ANNOTATIONS_MAX: usize = 256 * 1024;

/// Finalizer names Kubernetes accepts without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Validates the `metadata` of an object being created (or of the new object of an
/// update): name (by `rule`), generateName, namespace presence, generation, labels,
/// annotations, owner references and finalizers.
pub fn validate_object_meta(obj_v: &Value, namespaced: bool, rule: NameRule, errs: &mut Causes) {
    let null = Value::Null;
    let meta = obj_v.get("metadata").unwrap_or(&null);
    let name = se(meta, "name");
    let generate = se(meta, "generateName");
    if !generate.is_empty() {
        invalid_each(
            errs,
            "metadata.generateName",
            generate,
            rule.check(generate, true),
        );
    }
    if name.is_empty() {
        errs.push(FieldCause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        invalid_each(errs, "metadata.name", name, rule.check(name, false));
    }
    let ns = se(meta, "namespace");
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldCause::required("metadata.namespace", ""));
        } else {
            invalid_each(errs, "metadata.namespace", ns, is_dns1123_label(ns));
        }
    } else if !ns.is_empty() {
        errs.push(FieldCause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = int(meta, "generation") {
        if g < 0 {
            errs.push(FieldCause::invalid(
                "metadata.generation",
                &Value::from(g),
                IS_NEGATIVE,
            ));
        }
    }
    validate_labels(meta, "labels", "metadata.labels", errs);
    validate_annotations(meta, errs);
    validate_owner_references(meta, errs);
    validate_finalizers(arr(meta, "finalizers"), "metadata.finalizers", true, errs);
}

/// Validates the labels map `v[key]`: keys are qualified names, values label values.
/// Causes land on `path` itself, as Kubernetes reports them.
pub fn validate_labels(v: &Value, key: &str, path: &str, errs: &mut Causes) {
    for (k, val) in string_map(v, key) {
        invalid_each(errs, path, k, is_qualified_name(k));
        invalid_each(errs, path, val, is_label_value(val));
    }
}

/// Validates the annotations of `meta` (reported at `path`): keys are qualified names in
/// any case, and keys and values total at most 256 KiB.
pub fn validate_annotations_at(meta: &Value, path: &str, errs: &mut Causes) {
    let mut total = 0usize;
    for (k, val) in string_map(meta, "annotations") {
        invalid_each(errs, path, k, is_qualified_name(&k.to_lowercase()));
        total += k.len() + val.len();
    }
    if total > ANNOTATIONS_MAX {
        errs.push(FieldCause::too_long(path, ANNOTATIONS_MAX));
    }
}

fn validate_annotations(meta: &Value, errs: &mut Causes) {
    validate_annotations_at(meta, "metadata.annotations", errs);
}

fn validate_owner_references(meta: &Value, errs: &mut Causes) {
    let path = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for r in arr(meta, "ownerReferences") {
        let api_version = se(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldCause::invalid(
                format!("{path}.apiVersion"),
                &Value::from(api_version),
                "version must not be empty",
            ));
        }
        for key in ["kind", "name", "uid"] {
            if se(r, key).is_empty() {
                errs.push(FieldCause::invalid(
                    format!("{path}.{key}"),
                    &Value::from(""),
                    "must not be empty",
                ));
            }
        }
        if api_version == "v1" && se(r, "kind") == "Event" {
            errs.push(FieldCause::invalid(
                path,
                r,
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if flag(r, "controller") {
            let this = format!("{}/{}", se(r, "kind"), se(r, "name"));
            match &first_controller {
                Some(first) => errs.push(FieldCause::invalid(
                    path,
                    meta.get("ownerReferences").unwrap_or(&Value::Null),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"
                    ),
                )),
                None => first_controller = Some(this),
            }
        }
    }
}

/// Validates finalizer names at `path` (each cause at `path[i]` when `indexed`, else at
/// `path` itself, as Namespace `spec.finalizers` are reported).
pub fn validate_finalizers(list: &[Value], path: &str, indexed: bool, errs: &mut Causes) {
    let mut orphan = false;
    let mut foreground = false;
    for (i, f) in list.iter().enumerate() {
        let name = f.as_str().unwrap_or("");
        let at = if indexed {
            format!("{path}[{i}]")
        } else {
            path.to_string()
        };
        invalid_each(errs, path, name, is_qualified_name(name));
        if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
            errs.push(FieldCause::invalid(
                at,
                &Value::from(name),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
        orphan |= name == "orphan";
        foreground |= name == "foregroundDeletion";
    }
    if orphan && foreground {
        errs.push(FieldCause::invalid(
            path,
            &Value::Array(list.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// Validates `metadata` of an update against the stored object: name, namespace and uid
/// are immutable, and no finalizer may be added once deletion started; then the new
/// metadata must itself be valid (labels, annotations, owners, finalizers).
///
/// Fields the server rewrites on every update anyway (resourceVersion, generation,
/// creationTimestamp, an omitted uid) are not checked here.
pub fn validate_object_meta_update(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let nm = new.get("metadata").unwrap_or(&null);
    let om = old.get("metadata").unwrap_or(&null);
    if present(om, "deletionTimestamp").is_some() {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| Value::from(*f).to_string()).collect();
            errs.push(FieldCause::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    for key in ["name", "namespace"] {
        if se(nm, key) != se(om, key) {
            errs.push(FieldCause::invalid(
                format!("metadata.{key}"),
                &Value::from(se(nm, key)),
                IMMUTABLE,
            ));
        }
    }
    if let Some(uid) = s(nm, "uid").filter(|u| !u.is_empty()) {
        if uid != se(om, "uid") {
            errs.push(FieldCause::invalid(
                "metadata.uid",
                &Value::from(uid),
                IMMUTABLE,
            ));
        }
    }
    validate_labels(nm, "labels", "metadata.labels", errs);
    validate_annotations(nm, errs);
    validate_owner_references(nm, errs);
    validate_finalizers(arr(nm, "finalizers"), "metadata.finalizers", true, errs);
}

/// Validates a `metav1.LabelSelector` at `path`: matchLabels as labels, and each
/// matchExpressions entry (operator, values, key).
pub fn validate_label_selector(sel: &Value, path: &str, errs: &mut Causes) {
    validate_labels(sel, "matchLabels", &format!("{path}.matchLabels"), errs);
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = arr(e, "values");
        match se(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldCause::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldCause::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldCause::invalid(
                format!("{p}.operator"),
                &Value::from(other),
                "not a valid selector operator",
            )),
        }
        let key = se(e, "key");
        invalid_each(errs, &format!("{p}.key"), key, is_qualified_name(key));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            invalid_each(errs, &format!("{p}.values[{j}]"), v, is_label_value(v));
        }
    }
}

/// Whether a label selector has no requirement at all (it would select everything).
pub fn selector_is_empty(sel: &Value) -> bool {
    obj(sel, "matchLabels").is_none_or(|m| m.is_empty()) && arr(sel, "matchExpressions").is_empty()
}

/// Whether `labels` (the object holding a labels map under `key`) satisfy `sel`.
pub fn selector_matches(sel: &Value, holder: &Value, key: &str) -> bool {
    let labels = string_map(holder, key);
    let get = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
    for (k, v) in string_map(sel, "matchLabels") {
        if get(k) != Some(v) {
            return false;
        }
    }
    for e in arr(sel, "matchExpressions") {
        let key = se(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match se(e, "operator") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value, namespaced: bool, rule: NameRule) -> Causes {
        let mut errs = Vec::new();
        validate_object_meta(&v, namespaced, rule, &mut errs);
        errs
    }

    #[test]
    fn validation_meta_name_and_namespace() {
        let errs = run(
            json!({"metadata": {"namespace": "default"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            errs[0].message,
            "Required value: name or generateName is required"
        );

        let errs = run(
            json!({"metadata": {"name": "Web"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(errs[0].field, "metadata.name");
        assert!(errs[0]
            .message
            .starts_with("Invalid value: \"Web\": a lowercase RFC 1123 subdomain"));
        assert_eq!(errs[1].line(), "metadata.namespace: Required value");

        let errs = run(
            json!({"metadata": {"name": "n", "namespace": "x"}}),
            false,
            NameRule::Label,
        );
        assert_eq!(
            errs[0].line(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );

        let errs = run(
            json!({"metadata": {"generateName": "Web-", "name": "web-abcde", "namespace": "d"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.generateName");
    }

    #[test]
    fn validation_meta_labels_annotations_finalizers() {
        let errs = run(
            json!({"metadata": {"name": "a", "labels": {"app": "bad value", "-x": "ok"},
                   "annotations": {"Example.com/Fine": "any value at all", "a/b/c": ""},
                   "finalizers": ["example.com/f", "custom"]}}),
            false,
            NameRule::Subdomain,
        );
        let lines: Vec<String> = errs.iter().map(|e| e.line()).collect();
        assert_eq!(errs.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("metadata.labels: Invalid value: \"-x\": name part must consist")
        );
        assert!(lines[1]
            .starts_with("metadata.labels: Invalid value: \"bad value\": a valid label must be"));
        assert!(lines[2].starts_with(
            "metadata.annotations: Invalid value: \"a/b/c\": a qualified name must consist"
        ));
        assert_eq!(lines[3], "metadata.finalizers[1]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified");

        let big = "x".repeat(ANNOTATIONS_MAX);
        let errs = run(
            json!({"metadata": {"name": "a", "annotations": {"k": big}}}),
            false,
            NameRule::Subdomain,
        );
        assert_eq!(
            errs[0].line(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn validation_meta_update_immutables() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1",
                          "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a.io/x"]}});
        let new = json!({"metadata": {"name": "b", "namespace": "d", "uid": "u2",
                          "finalizers": ["a.io/x", "b.io/y"]}});
        let mut errs = Vec::new();
        validate_object_meta_update(&new, &old, &mut errs);
        let lines: Vec<String> = errs.iter().map(|e| e.line()).collect();
        assert_eq!(lines, vec![
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"b.io/y\"}",
            "metadata.name: Invalid value: \"b\": field is immutable",
            "metadata.uid: Invalid value: \"u2\": field is immutable",
        ]);
    }

    #[test]
    fn validation_meta_selectors() {
        let sel = json!({"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                              {"key": "x", "operator": "DoesNotExist"}]});
        assert!(selector_matches(
            &sel,
            &json!({"labels": {"app": "web", "tier": "b"}}),
            "labels"
        ));
        assert!(!selector_matches(
            &sel,
            &json!({"labels": {"app": "web", "tier": "c"}}),
            "labels"
        ));
        assert!(!selector_matches(
            &sel,
            &json!({"labels": {"app": "web", "tier": "a", "x": ""}}),
            "labels"
        ));
        assert!(selector_is_empty(&json!({})));
        let mut errs = Vec::new();
        validate_label_selector(
            &json!({"matchExpressions": [{"key": "k", "operator": "In"}, {"key": "k", "operator": "Has"}]}),
            "spec.selector",
            &mut errs,
        );
        assert_eq!(errs[0].line(), "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'");
        assert_eq!(errs[1].line(), "spec.selector.matchExpressions[1].operator: Invalid value: \"Has\": not a valid selector operator");
    }
}
