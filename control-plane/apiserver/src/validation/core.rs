//! The smaller kinds: Namespaces, Nodes, ConfigMaps, Secrets, Events, Leases and the
//! autoscaling `Scale` subresource object.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::meta::validate_finalizers;
use super::names::{is_config_map_key, is_dns1123_subdomain, is_label_value, is_qualified_name};
use super::pod::validate_taint_effect;
use super::quantity::{Quantity, QUANTITY_FORMAT};
use super::util::{
    arr, child, default_missing, default_zero, int, invalid_each, obj, present, s, se, Causes,
    IMMUTABLE, IS_NEGATIVE,
};
use crate::error::FieldCause;

/// Largest total size of the data of a ConfigMap or Secret (1 MiB).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";

/// Namespace defaults: the `kubernetes.io/metadata.name` label, `status.phase` Active, and
/// the `kubernetes` finalizer in `spec.finalizers` when the namespace has no finalizer
/// list yet and is not being deleted (the namespace controller removes that finalizer
/// while deleting, and it must not come back).
pub fn default_namespace(ns: &mut Value) {
    let name = ns
        .get("metadata")
        .map(|m| se(m, "name").to_string())
        .unwrap_or_default();
    let deleting = ns
        .get("metadata")
        .and_then(|m| present(m, "deletionTimestamp"))
        .is_some();
    if !name.is_empty() {
        if let Some(labels) = child(ns, "metadata").and_then(|m| child(m, "labels")) {
            if let Some(m) = labels.as_object_mut() {
                m.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    if let Some(status) = child(ns, "status") {
        default_zero(status, "phase", json!("Active"));
    }
    if !deleting {
        if let Some(spec) = child(ns, "spec") {
            default_missing(spec, "finalizers", json!(["kubernetes"]));
        }
    }
}

/// Keeps the stored `spec.finalizers` of a Namespace on update (they change only through
/// the `finalize` subresource).
pub fn keep_namespace_finalizers(new: &mut Value, old: &Value) {
    let kept = old
        .get("spec")
        .and_then(|s| present(s, "finalizers"))
        .cloned();
    let Some(spec) = child(new, "spec").and_then(Value::as_object_mut) else {
        return;
    };
    match kept {
        Some(f) => spec.insert("finalizers".into(), f),
        None => spec.remove("finalizers"),
    };
}

/// Node defaults: `status.allocatable` copies `status.capacity` when absent.
pub fn default_node(node: &mut Value) {
    let Some(status) = node.get_mut("status").filter(|s| s.is_object()) else {
        return;
    };
    if let Some(cap) = present(status, "capacity").cloned() {
        default_missing(status, "allocatable", cap);
    }
}

/// Secret defaults: type Opaque, and `stringData` folded into `data` (base64), as the v1
/// conversion does before anything is stored.
pub fn default_secret(secret: &mut Value) {
    let Some(m) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
        if data.is_null() {
            *data = Value::Object(Map::new());
        }
        if let Some(d) = data.as_object_mut() {
            for (k, v) in sd {
                let raw = v.as_str().unwrap_or("");
                let enc = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
                d.insert(k, json!(enc));
            }
        }
    }
    default_zero(secret, "type", json!("Opaque"));
}

/// Validates a Namespace's `spec.finalizers`.
pub fn validate_namespace(ns: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let spec = ns.get("spec").unwrap_or(&null);
    validate_finalizers(arr(spec, "finalizers"), "spec.finalizers", false, errs);
}

/// Namespace status rules: Active unless deleting, Terminating once deleting.
pub fn validate_namespace_status(ns: &Value, errs: &mut Causes) {
    let deleting = ns
        .get("metadata")
        .and_then(|m| present(m, "deletionTimestamp"))
        .is_some();
    let phase = ns.get("status").map(|s| se(s, "phase")).unwrap_or_default();
    if !deleting && phase != "Active" {
        errs.push(FieldCause::invalid(
            "status.Phase",
            &json!(phase),
            "may only be 'Active' if `deletionTimestamp` is empty",
        ));
    } else if deleting && phase != "Terminating" {
        errs.push(FieldCause::invalid(
            "status.Phase",
            &json!(phase),
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        ));
    }
}

/// Validates a ConfigMap: keys of `data` and `binaryData`, no key in both, total size.
pub fn validate_config_map(cm: &Value, errs: &mut Causes) {
    let mut total = 0usize;
    let binary = obj(cm, "binaryData");
    for (k, v) in sorted(obj(cm, "data")) {
        invalid_each(errs, &format!("data[{k}]"), k, is_config_map_key(k));
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldCause::invalid(
                format!("data[{k}]"),
                &json!(k),
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in sorted(binary) {
        invalid_each(errs, &format!("binaryData[{k}]"), k, is_config_map_key(k));
        total += decoded_len(v);
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldCause::too_long("", MAX_DATA_SIZE));
    }
}

fn sorted(m: Option<&Map<String, Value>>) -> Vec<(&str, &Value)> {
    let mut v: Vec<(&str, &Value)> = m
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Bytes held by a base64 value (its estimated size if it does not decode).
fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(|d| d.len())
        .unwrap_or(s.len() / 4 * 3)
}

/// Validates a Secret: keys, total size, and the keys each well-known type requires.
pub fn validate_secret(secret: &Value, errs: &mut Causes) {
    let data = obj(secret, "data");
    let mut total = 0usize;
    for (k, v) in sorted(data) {
        invalid_each(errs, &format!("data[{k}]"), k, is_config_map_key(k));
        total += decoded_len(v);
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldCause::too_long("data", MAX_DATA_SIZE));
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let require = |errs: &mut Causes, k: &str| {
        if !has(k) {
            errs.push(FieldCause::required(format!("data[{k}]"), ""));
        }
    };
    match se(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .map(|a| se(a, "kubernetes.io/service-account.name"))
                .unwrap_or("");
            if name.is_empty() {
                errs.push(FieldCause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => {
            require(errs, ".dockercfg");
            check_json_key(data, ".dockercfg", errs);
        }
        "kubernetes.io/dockerconfigjson" => {
            require(errs, ".dockerconfigjson");
            check_json_key(data, ".dockerconfigjson", errs);
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require(errs, "username");
            require(errs, "password");
        }
        "kubernetes.io/ssh-auth" => {
            let empty = data
                .and_then(|d| d.get("ssh-privatekey"))
                .is_none_or(|v| decoded_len(v) == 0);
            if empty {
                errs.push(FieldCause::required("data[ssh-privatekey]", ""));
            }
        }
        "kubernetes.io/tls" => {
            require(errs, "tls.crt");
            require(errs, "tls.key");
        }
        _ => {}
    }
}

fn check_json_key(data: Option<&Map<String, Value>>, key: &str, errs: &mut Causes) {
    let Some(raw) = data.and_then(|d| d.get(key)).and_then(Value::as_str) else {
        return;
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_default();
    if let Err(e) = serde_json::from_slice::<Map<String, Value>>(&bytes) {
        errs.push(FieldCause::invalid(
            format!("data[{key}]"),
            &json!("<secret contents redacted>"),
            &e.to_string(),
        ));
    }
}

/// Update rules of ConfigMaps and Secrets: once `immutable` is true, it stays true and the
/// data may not change; a Secret's type never changes.
pub fn validate_immutable_data(new: &Value, old: &Value, secret: bool, errs: &mut Causes) {
    if secret && se(new, "type") != se(old, "type") {
        errs.push(FieldCause::invalid(
            "type",
            &json!(se(new, "type")),
            IMMUTABLE,
        ));
    }
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldCause::forbidden("immutable", IMMUTABLE_WHEN_SET));
    }
    let keys: &[&str] = if secret {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    let empty = Value::Object(Map::new());
    for k in keys {
        let norm = |v: &Value| match present(v, k) {
            None => empty.clone(),
            Some(x) => x.clone(),
        };
        if norm(new) != norm(old) {
            errs.push(FieldCause::forbidden(*k, IMMUTABLE_WHEN_SET));
        }
    }
}

/// Validates a Node: taints, pod CIDRs, and the quantities of its status.
pub fn validate_node(node: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let spec = node.get("spec").unwrap_or(&null);
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = se(t, "key");
        invalid_each(errs, &format!("{p}.key"), key, is_qualified_name(key));
        let value = se(t, "value");
        let msgs = is_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldCause::invalid(
                format!("{p}.value"),
                &json!(value),
                &msgs.join(";"),
            ));
        }
        let effect = se(t, "effect");
        if effect.is_empty() {
            errs.push(FieldCause::required(format!("{p}.effect"), ""));
        } else {
            validate_taint_effect(effect, &format!("{p}.effect"), errs);
        }
        let pair = (key.to_string(), effect.to_string());
        if seen.contains(&pair) {
            let mut c = FieldCause::duplicate(&p, t);
            c.message = format!(
                "{}: taints must be unique by key and effect pair",
                c.message
            );
            errs.push(c);
        } else {
            seen.push(pair);
        }
    }
    let cidrs = arr(spec, "podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        if !valid_cidr(c) {
            errs.push(FieldCause::invalid(
                format!("spec.podCIDRs[{i}]"),
                &json!(c),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    if cidrs.len() > 1 {
        let v4 = cidrs
            .iter()
            .filter(|c| c.as_str().is_some_and(|c| !c.contains(':')))
            .count();
        if cidrs.len() > 2 || v4 != 1 {
            errs.push(FieldCause::invalid(
                "spec.podCIDRs",
                spec.get("podCIDRs").unwrap_or(&null),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    let status = node.get("status").unwrap_or(&null);
    for list in ["capacity", "allocatable"] {
        for (k, v) in sorted(obj(status, list)) {
            let raw = v.as_str().unwrap_or("");
            let p = format!("status.{list}[{k}]");
            invalid_each(errs, &p, k, is_qualified_name(k));
            match Quantity::parse(raw) {
                None => errs.push(FieldCause::invalid(&p, &json!(raw), QUANTITY_FORMAT)),
                Some(q) if q.is_negative() => {
                    errs.push(FieldCause::invalid(&p, &json!(raw), IS_NEGATIVE))
                }
                _ => {}
            }
        }
    }
}

fn valid_cidr(c: &str) -> bool {
    let Some((ip, bits)) = c.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// Update rules of a Node: pod CIDRs and provider ID may only go from unset to set.
pub fn validate_node_update(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    if !arr(os, "podCIDRs").is_empty() && arr(ns, "podCIDRs") != arr(os, "podCIDRs") {
        errs.push(FieldCause::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_id = se(os, "providerID");
    if !old_id.is_empty() && se(ns, "providerID") != old_id {
        errs.push(FieldCause::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

/// Validates a core/v1 Event the way Kubernetes does for that API version (only the
/// legacy checks), plus a non-empty `involvedObject`.
pub fn validate_event(ev: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let involved = ev.get("involvedObject").unwrap_or(&null);
    let empty_ref = ["kind", "name", "uid", "namespace", "apiVersion"]
        .iter()
        .all(|k| se(involved, k).is_empty());
    if empty_ref {
        errs.push(FieldCause::required("involvedObject", ""));
    }
    let ns = ev.get("metadata").map(|m| se(m, "namespace")).unwrap_or("");
    let ins = se(involved, "namespace");
    let legacy = present(ev, "eventTime").is_none();
    let mismatch = if legacy {
        if ins.is_empty() {
            !ns.is_empty() && ns != "default"
        } else {
            ns != ins
        }
    } else {
        ins.is_empty() && ns != "default" && ns != "kube-system"
    };
    if mismatch {
        errs.push(FieldCause::invalid(
            "involvedObject.namespace",
            &json!(ins),
            "does not match event.namespace",
        ));
    }
    if !legacy {
        let rc = se(ev, "reportingComponent");
        if rc.is_empty() {
            errs.push(FieldCause::required("reportingComponent", ""));
        } else {
            invalid_each(errs, "reportingComponent", rc, is_qualified_name(rc));
        }
        for (key, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = se(ev, key);
            if v.is_empty() {
                errs.push(FieldCause::required(key, ""));
            } else if v.len() > max {
                errs.push(FieldCause::invalid(
                    key,
                    &json!(""),
                    &format!("can have at most {max} characters"),
                ));
            }
        }
        if se(ev, "message").len() > 1024 {
            errs.push(FieldCause::invalid(
                "message",
                &json!(""),
                "can have at most 1024 characters",
            ));
        }
    }
    for m in is_dns1123_subdomain(ns) {
        errs.push(FieldCause::invalid("metadata.namespace", &json!(ns), &m));
    }
    if let Some(n) = int(ev, "count") {
        if n < 0 {
            errs.push(FieldCause::invalid("count", &json!(n), IS_NEGATIVE));
        }
    }
}

/// Validates a Lease's spec: positive duration, non-negative transitions, and a preferred
/// holder only with a strategy.
pub fn validate_lease(lease: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let spec = lease.get("spec").unwrap_or(&null);
    if let Some(d) = int(spec, "leaseDurationSeconds") {
        if d <= 0 {
            errs.push(FieldCause::invalid(
                "spec.leaseDurationSeconds",
                &json!(d),
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = int(spec, "leaseTransitions") {
        if t < 0 {
            errs.push(FieldCause::invalid(
                "spec.leaseTransitions",
                &json!(t),
                IS_NEGATIVE,
            ));
        }
    }
    let strategy = se(spec, "strategy");
    if present(spec, "strategy").is_some() && strategy != "OldestEmulationVersion" {
        errs.push(FieldCause::not_supported(
            "spec.strategy",
            &json!(strategy),
            &["OldestEmulationVersion"],
        ));
    }
    if !se(spec, "preferredHolder").is_empty() && strategy.is_empty() {
        errs.push(FieldCause::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
    // Skiff's own bound (Kubernetes sets none): a holder identity is a pod or host name.
    if let Some(h) = s(spec, "holderIdentity") {
        if h.len() > 1024 {
            errs.push(FieldCause::too_long("spec.holderIdentity", 1024));
        }
    }
}

/// Validates an `autoscaling/v1` Scale: replicas not negative.
pub fn validate_scale(scale: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let spec = scale.get("spec").unwrap_or(&null);
    if let Some(r) = int(spec, "replicas") {
        if r < 0 {
            errs.push(FieldCause::invalid("spec.replicas", &json!(r), IS_NEGATIVE));
        }
    }
}
