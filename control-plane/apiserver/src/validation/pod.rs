//! Pods and pod templates: the defaulters of `pkg/apis/core/v1/defaults.go`, the pod-only
//! admission defaults (ServiceAccount, Priority, DefaultTolerationSeconds), `ValidatePodSpec`
//! and the update rules of `ValidatePodUpdate`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::meta::validate_labels;
use super::names::{
    inclusive_range, is_config_map_key, is_dns1123_label, is_dns1123_subdomain, is_env_var_name,
    is_label_value, is_port_name, is_port_num, is_qualified_name,
};
use super::quantity::{Quantity, QUANTITY_FORMAT};
use super::util::{
    arr, child, child_if, default_missing, default_zero, flag, int, invalid_each, is_unset,
    items_mut, nonnegative, not_found, obj, present, s, se, Causes, IS_NEGATIVE,
};
use crate::error::FieldCause;

/// Seconds the DefaultTolerationSeconds admission plugin lets a pod stay on a node that
/// is not ready or unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// The container lists of a pod spec, in Kubernetes's order.
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The volume source fields, in the order Kubernetes checks them.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "quobyte",
    "cinder",
    "cephfs",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "configMap",
    "csi",
    "ephemeral",
    "image",
];

// ---------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------

/// Defaults of a Pod: the pod-spec defaults, then what only Pods get (requests from
/// limits, `enableServiceLinks`, host-network ports) and what the admission plugins add on
/// creation (service account, priority, not-ready/unreachable tolerations), and the
/// initial status (`Pending`, QoS class) when no status was set yet.
pub fn default_pod(pod: &mut Value) {
    let Some(spec) = child(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);
    for list in ["containers", "initContainers"] {
        for c in items_mut(spec, list) {
            requests_from_limits(c);
        }
    }
    default_missing(spec, "enableServiceLinks", json!(true));
    if flag(spec, "hostNetwork") {
        for list in ["containers", "initContainers"] {
            for c in items_mut(spec, list) {
                for p in items_mut(c, "ports") {
                    if is_unset(p, "hostPort") {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            default_zero(p, "hostPort", cp);
                        }
                    }
                }
            }
        }
    }
    // ServiceAccount admission, after the deprecated `serviceAccount` was read.
    sync_service_account(spec);
    default_zero(spec, "serviceAccountName", json!("default"));
    sync_service_account(spec);
    // Priority admission.
    if present(spec, "priority").is_none() {
        let priority = match se(spec, "priorityClassName") {
            "system-node-critical" => 2_000_001_000,
            "system-cluster-critical" => 2_000_000_000,
            _ => 0,
        };
        default_missing(spec, "priority", json!(priority));
    }
    default_zero(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission.
    default_tolerations(spec);

    let qos = qos_class(pod.get("spec").unwrap_or(&Value::Null));
    if let Some(status) = child(pod, "status") {
        if is_unset(status, "phase") {
            default_zero(status, "phase", json!("Pending"));
        }
        default_zero(status, "qosClass", json!(qos));
    }
}

/// Defaults of a pod template's spec (Deployments, ReplicaSets): the same defaulters as a
/// Pod's spec, without the pod-only and admission defaults.
pub fn default_template(tmpl_holder: &mut Value) {
    if let Some(spec) = child(tmpl_holder, "template").and_then(|t| child(t, "spec")) {
        default_pod_spec(spec);
        sync_service_account(spec);
    }
}

/// `SetDefaults_PodSpec` and the defaulters of everything a pod spec holds.
fn default_pod_spec(spec: &mut Value) {
    default_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    default_zero(spec, "restartPolicy", json!("Always"));
    default_missing(spec, "securityContext", json!({}));
    default_missing(spec, "terminationGracePeriodSeconds", json!(30));
    default_zero(spec, "schedulerName", json!("default-scheduler"));
    for list in CONTAINER_LISTS {
        for c in items_mut(spec, list) {
            default_container(c);
        }
    }
    for v in items_mut(spec, "volumes") {
        default_volume(v);
    }
}

/// The v1 `serviceAccount` field mirrors `serviceAccountName` (conversion keeps them equal).
fn sync_service_account(spec: &mut Value) {
    let name = se(spec, "serviceAccountName").to_string();
    if name.is_empty() {
        if let Some(old) = s(spec, "serviceAccount").filter(|x| !x.is_empty()) {
            let old = json!(old);
            default_zero(spec, "serviceAccountName", old);
        }
    } else if let Some(m) = spec.as_object_mut() {
        m.insert("serviceAccount".into(), json!(name));
    }
}

fn default_container(c: &mut Value) {
    if is_unset(c, "imagePullPolicy") {
        let policy = if image_tag(se(c, "image")) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        default_zero(c, "imagePullPolicy", json!(policy));
    }
    default_zero(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_zero(c, "terminationMessagePolicy", json!("File"));
    default_missing(c, "resources", json!({}));
    for p in items_mut(c, "ports") {
        default_zero(p, "protocol", json!("TCP"));
    }
    for e in items_mut(c, "env") {
        if let Some(f) = child_if(e, "valueFrom").and_then(|vf| child_if(vf, "fieldRef")) {
            default_zero(f, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child_if(c, probe) {
            default_zero(p, "timeoutSeconds", json!(1));
            default_zero(p, "periodSeconds", json!(10));
            default_zero(p, "successThreshold", json!(1));
            default_zero(p, "failureThreshold", json!(3));
            default_http_get(p);
        }
    }
    if let Some(l) = child_if(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = child_if(l, hook) {
                default_http_get(h);
            }
        }
    }
}

fn default_http_get(handler: &mut Value) {
    if let Some(h) = child_if(handler, "httpGet") {
        default_zero(h, "path", json!("/"));
        default_zero(h, "scheme", json!("HTTP"));
    }
}

/// The tag Kubernetes's image-name parser finds: `latest` when the reference has neither a
/// tag nor a digest, `None` when it has only a digest or cannot be parsed.
fn image_tag(image: &str) -> Option<&str> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace()) {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    // Repository paths are lowercase (the registry host part may not be, but a host is
    // followed by '/').
    let path = repo.split_once('/').map_or(repo, |(first, rest)| {
        if first.contains(['.', ':']) || first == "localhost" {
            rest
        } else {
            repo
        }
    });
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    match (tag, digest) {
        (Some(t), _) if !t.is_empty() => Some(t),
        (Some(_), _) => None,
        (None, Some(_)) => None,
        (None, None) => Some("latest"),
    }
}

fn default_volume(v: &mut Value) {
    if !v.is_object() {
        return;
    }
    if !VOLUME_SOURCES.iter().any(|k| present(v, k).is_some()) {
        default_missing(v, "emptyDir", json!({}));
    }
    for (src, mode) in [("secret", 420), ("configMap", 420), ("downwardAPI", 420)] {
        if let Some(x) = child_if(v, src) {
            default_missing(x, "defaultMode", json!(mode));
        }
    }
    if let Some(d) = child_if(v, "downwardAPI") {
        default_field_refs(d);
    }
    if let Some(p) = child_if(v, "projected") {
        default_missing(p, "defaultMode", json!(420));
        for src in items_mut(p, "sources") {
            if let Some(t) = child_if(src, "serviceAccountToken") {
                default_missing(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = child_if(src, "downwardAPI") {
                default_field_refs(d);
            }
        }
    }
    if let Some(h) = child_if(v, "hostPath") {
        default_missing(h, "type", json!(""));
    }
    if let Some(spec) = child_if(v, "ephemeral")
        .and_then(|e| child_if(e, "volumeClaimTemplate"))
        .and_then(|t| child_if(t, "spec"))
    {
        default_zero(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(i) = child_if(v, "image") {
        if is_unset(i, "pullPolicy") {
            let policy = if image_tag(se(i, "reference")) == Some("latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            default_zero(i, "pullPolicy", json!(policy));
        }
    }
}

fn default_field_refs(downward: &mut Value) {
    for item in items_mut(downward, "items") {
        if let Some(f) = child_if(item, "fieldRef") {
            default_zero(f, "apiVersion", json!("v1"));
        }
    }
}

/// `SetDefaults_Pod`: requests default to limits for each resource only limited.
fn requests_from_limits(c: &mut Value) {
    let Some(res) = child_if(c, "resources") else {
        return;
    };
    let Some(limits) = obj(res, "limits").cloned() else {
        return;
    };
    if let Some(req) = child(res, "requests").and_then(Value::as_object_mut) {
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
}

/// Adds the NoExecute tolerations for `node.kubernetes.io/not-ready` and
/// `node.kubernetes.io/unreachable` unless the pod already tolerates those taints.
fn default_tolerations(spec: &mut Value) {
    let tolerates = |key: &str| {
        arr(spec, "tolerations").iter().any(|t| {
            let k = se(t, "key");
            let e = se(t, "effect");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut add = Vec::new();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerates(key) {
            add.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}),
            );
        }
    }
    if add.is_empty() {
        return;
    }
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    let slot = m.entry("tolerations").or_insert(Value::Null);
    if slot.is_null() {
        *slot = json!([]);
    }
    if let Some(list) = slot.as_array_mut() {
        list.extend(add);
    }
}

/// The QoS class Kubernetes records in `status.qosClass`: Guaranteed when every container
/// limits cpu and memory with requests equal to limits, BestEffort when no container asks
/// for or limits cpu or memory, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["containers", "initContainers"] {
        for c in arr(spec, list) {
            let res = c.get("resources").unwrap_or(&Value::Null);
            let limits = res.get("limits").unwrap_or(&Value::Null);
            let requests = res.get("requests").unwrap_or(&Value::Null);
            for r in ["cpu", "memory"] {
                let lim = s(limits, r).and_then(Quantity::parse);
                let req = s(requests, r).and_then(Quantity::parse);
                let lim_nonzero = lim.is_some_and(|q| q.0 != 0);
                let req_nonzero = req.is_some_and(|q| q.0 != 0);
                any |= lim_nonzero || req_nonzero;
                if !lim_nonzero || req.is_some_and(|q| Some(q) != lim) {
                    guaranteed = false;
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Validates a pod spec at `path` (`spec`, or `spec.template.spec`).
pub fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Causes) {
    let volumes = validate_volumes(spec, path, errs);
    let mut names = BTreeSet::new();
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldCause::required(format!("{path}.containers"), ""));
    }
    for list in CONTAINER_LISTS {
        for (i, c) in arr(spec, list).iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            validate_container(c, &p, list, &volumes, &mut names, errs);
        }
    }
    match se(spec, "restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldCause::required(format!("{path}.restartPolicy"), "")),
        other => errs.push(FieldCause::not_supported(
            format!("{path}.restartPolicy"),
            &json!(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    match se(spec, "dnsPolicy") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" => {}
        "None" => {
            if present(spec, "dnsConfig").is_none() {
                errs.push(FieldCause::required(
                    format!("{path}.dnsConfig"),
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
            }
        }
        "" => errs.push(FieldCause::required(format!("{path}.dnsPolicy"), "")),
        other => errs.push(FieldCause::not_supported(
            format!("{path}.dnsPolicy"),
            &json!(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    validate_labels(spec, "nodeSelector", &format!("{path}.nodeSelector"), errs);
    for (key, check) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
        ("priorityClassName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
    ] {
        if let Some(v) = s(spec, key).filter(|v| !v.is_empty()) {
            invalid_each(errs, &format!("{path}.{key}"), v, check(v));
        }
    }
    if let Some(n) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            errs.push(FieldCause::invalid(
                format!("{path}.activeDeadlineSeconds"),
                &json!(n),
                &inclusive_range(1, i64::from(i32::MAX)),
            ));
        }
    }
    validate_tolerations(
        arr(spec, "tolerations"),
        &format!("{path}.tolerations"),
        errs,
    );
    if flag(spec, "hostNetwork") {
        for list in ["containers", "initContainers"] {
            for (i, c) in arr(spec, list).iter().enumerate() {
                for (j, p) in arr(c, "ports").iter().enumerate() {
                    let hp = int(p, "hostPort").unwrap_or(0);
                    let cp = int(p, "containerPort").unwrap_or(0);
                    if hp != 0 && hp != cp {
                        errs.push(FieldCause::invalid(
                            format!("{path}.{list}[{i}].ports[{j}].containerPort"),
                            &json!(cp),
                            "must match `hostPort` when `hostNetwork` is true",
                        ));
                    }
                }
            }
        }
    }
}

/// Validates the volumes and returns the names of the valid ones (for volumeMounts).
fn validate_volumes(spec: &Value, path: &str, errs: &mut Causes) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        let mut el = Vec::new();
        let mut count = 0;
        for src in VOLUME_SOURCES {
            if present(v, src).is_some() {
                if count > 0 {
                    el.push(FieldCause::forbidden(
                        format!("{p}.{src}"),
                        "may not specify more than 1 volume type",
                    ));
                }
                count += 1;
            }
        }
        if count == 0 {
            el.push(FieldCause::required(&p, "must specify a volume type"));
        }
        validate_volume_source(v, &p, &mut el);
        let name = se(v, "name");
        if name.is_empty() {
            el.push(FieldCause::required(format!("{p}.name"), ""));
        } else {
            invalid_each(&mut el, &format!("{p}.name"), name, is_dns1123_label(name));
        }
        if names.contains(name) {
            el.push(FieldCause::duplicate(format!("{p}.name"), &json!(name)));
        }
        if el.is_empty() {
            names.insert(name.to_string());
        } else {
            errs.extend(el);
        }
    }
    names
}

fn validate_volume_source(v: &Value, p: &str, errs: &mut Causes) {
    let required = |errs: &mut Causes, src: &str, key: &str| {
        if let Some(x) = present(v, src) {
            if se(x, key).is_empty() {
                errs.push(FieldCause::required(format!("{p}.{src}.{key}"), ""));
            }
        }
    };
    required(errs, "secret", "secretName");
    required(errs, "configMap", "name");
    required(errs, "persistentVolumeClaim", "claimName");
    required(errs, "hostPath", "path");
    required(errs, "nfs", "server");
    required(errs, "nfs", "path");
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(x) = present(v, src) {
            if let Some(mode) = int(x, "defaultMode") {
                if !(0..=0o777).contains(&mode) {
                    errs.push(FieldCause::invalid(
                        format!("{p}.{src}.defaultMode"),
                        &json!(mode),
                        "must be a number between 0 and 0777 (octal), both inclusive",
                    ));
                }
            }
        }
    }
    for src in ["secret", "configMap"] {
        if let Some(x) = present(v, src) {
            for (j, item) in arr(x, "items").iter().enumerate() {
                let ip = format!("{p}.{src}.items[{j}]");
                let key = se(item, "key");
                if key.is_empty() {
                    errs.push(FieldCause::required(format!("{ip}.key"), ""));
                }
                validate_local_path(se(item, "path"), &format!("{ip}.path"), errs);
            }
        }
    }
    if let Some(h) = present(v, "hostPath") {
        const TYPES: &[&str] = &[
            "",
            "BlockDevice",
            "CharDevice",
            "Directory",
            "DirectoryOrCreate",
            "File",
            "FileOrCreate",
            "Socket",
        ];
        let t = se(h, "type");
        if !TYPES.contains(&t) {
            errs.push(FieldCause::not_supported(
                format!("{p}.hostPath.type"),
                &json!(t),
                TYPES,
            ));
        }
    }
}

/// A relative path inside a volume: not absolute, no `..` element.
fn validate_local_path(path_value: &str, field: &str, errs: &mut Causes) {
    if path_value.is_empty() {
        errs.push(FieldCause::required(field, ""));
        return;
    }
    if path_value.starts_with('/') {
        errs.push(FieldCause::invalid(
            field,
            &json!(path_value),
            "must be a relative path",
        ));
    }
    if path_value.split('/').any(|e| e == "..") {
        errs.push(FieldCause::invalid(
            field,
            &json!(path_value),
            "must not contain '..'",
        ));
    }
}

fn validate_container(
    c: &Value,
    p: &str,
    list: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    errs: &mut Causes,
) {
    let name = se(c, "name");
    if name.is_empty() {
        errs.push(FieldCause::required(format!("{p}.name"), ""));
    } else {
        invalid_each(errs, &format!("{p}.name"), name, is_dns1123_label(name));
        if !names.insert(name.to_string()) {
            errs.push(FieldCause::duplicate(format!("{p}.name"), &json!(name)));
        }
    }
    if se(c, "image").is_empty() {
        errs.push(FieldCause::required(format!("{p}.image"), ""));
    }
    match se(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldCause::required(format!("{p}.imagePullPolicy"), "")),
        other => errs.push(FieldCause::not_supported(
            format!("{p}.imagePullPolicy"),
            &json!(other),
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    match se(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldCause::required(
            format!("{p}.terminationMessagePolicy"),
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
        other => errs.push(FieldCause::invalid(
            format!("{p}.terminationMessagePolicy"),
            &json!(other),
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
    }
    let sidecar = se(c, "restartPolicy") == "Always";
    if let Some(rp) = present(c, "restartPolicy") {
        if list == "initContainers" {
            if !sidecar {
                errs.push(FieldCause::not_supported(
                    format!("{p}.restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
        } else {
            errs.push(FieldCause::forbidden(
                format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    validate_ports(c, p, errs);
    validate_env(c, p, errs);
    validate_mounts(c, p, volumes, errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(pr) = present(c, probe) else {
            continue;
        };
        let pp = format!("{p}.{probe}");
        if list == "ephemeralContainers" {
            errs.push(FieldCause::forbidden(
                &pp,
                "may not be set for ephemeral containers",
            ));
            continue;
        }
        if list == "initContainers" && !sidecar {
            errs.push(FieldCause::forbidden(
                &pp,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        validate_handler(pr, &pp, &["exec", "httpGet", "tcpSocket", "grpc"], errs);
        for key in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            nonnegative(errs, pr, key, &pp);
        }
        if probe != "readinessProbe" {
            if let Some(n) = int(pr, "successThreshold").filter(|n| *n != 1) {
                errs.push(FieldCause::invalid(
                    format!("{pp}.successThreshold"),
                    &json!(n),
                    "must be 1",
                ));
            }
        }
        if let Some(n) = int(pr, "terminationGracePeriodSeconds").filter(|n| *n <= 0) {
            errs.push(FieldCause::invalid(
                format!("{pp}.terminationGracePeriodSeconds"),
                &json!(n),
                "must be greater than 0",
            ));
        }
    }
    if let Some(l) = present(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = present(l, hook) {
                validate_handler(
                    h,
                    &format!("{p}.lifecycle.{hook}"),
                    &["exec", "httpGet", "tcpSocket", "sleep"],
                    errs,
                );
            }
        }
    }
    if let Some(res) = present(c, "resources") {
        validate_resources(res, &format!("{p}.resources"), errs);
    }
}

fn validate_ports(c: &Value, p: &str, errs: &mut Causes) {
    let mut port_names = BTreeSet::new();
    for (i, port) in arr(c, "ports").iter().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        let name = se(port, "name");
        if !name.is_empty() {
            let msgs = is_port_name(name);
            if !msgs.is_empty() {
                invalid_each(errs, &format!("{pp}.name"), name, msgs);
            } else if !port_names.insert(name.to_string()) {
                errs.push(FieldCause::duplicate(format!("{pp}.name"), &json!(name)));
            }
        }
        match int(port, "containerPort").unwrap_or(0) {
            0 => errs.push(FieldCause::required(format!("{pp}.containerPort"), "")),
            n => {
                for m in is_port_num(n) {
                    errs.push(FieldCause::invalid(
                        format!("{pp}.containerPort"),
                        &json!(n),
                        &m,
                    ));
                }
            }
        }
        if let Some(n) = int(port, "hostPort").filter(|n| *n != 0) {
            for m in is_port_num(n) {
                errs.push(FieldCause::invalid(format!("{pp}.hostPort"), &json!(n), &m));
            }
        }
        validate_protocol(port, &pp, errs);
    }
}

/// `protocol` must be set (defaults set it) and one of SCTP, TCP, UDP.
pub fn validate_protocol(port: &Value, pp: &str, errs: &mut Causes) {
    match se(port, "protocol") {
        "" => errs.push(FieldCause::required(format!("{pp}.protocol"), "")),
        p if PROTOCOLS.contains(&p) => {}
        p => errs.push(FieldCause::not_supported(
            format!("{pp}.protocol"),
            &json!(p),
            PROTOCOLS,
        )),
    }
}

fn validate_env(c: &Value, p: &str, errs: &mut Causes) {
    for (i, e) in arr(c, "env").iter().enumerate() {
        let ep = format!("{p}.env[{i}]");
        let name = se(e, "name");
        if name.is_empty() {
            errs.push(FieldCause::required(format!("{ep}.name"), ""));
        } else {
            invalid_each(errs, &format!("{ep}.name"), name, is_env_var_name(name));
        }
        let Some(vf) = present(e, "valueFrom") else {
            continue;
        };
        let vp = format!("{ep}.valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .into_iter()
        .filter(|k| present(vf, k).is_some())
        .collect();
        match sources.len() {
            0 => errs.push(FieldCause::invalid(
                &vp,
                &json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )),
            1 => {}
            _ => errs.push(FieldCause::invalid(
                &vp,
                &json!(""),
                "may not have more than one field specified at a time",
            )),
        }
        if !se(e, "value").is_empty() && !sources.is_empty() {
            errs.push(FieldCause::invalid(
                &vp,
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        }
        if let Some(f) = present(vf, "fieldRef") {
            if se(f, "fieldPath").is_empty() {
                errs.push(FieldCause::required(format!("{vp}.fieldRef.fieldPath"), ""));
            }
        }
        if let Some(r) = present(vf, "resourceFieldRef") {
            if se(r, "resource").is_empty() {
                errs.push(FieldCause::required(
                    format!("{vp}.resourceFieldRef.resource"),
                    "",
                ));
            }
        }
        for src in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = present(vf, src) {
                let key = se(r, "key");
                if key.is_empty() {
                    errs.push(FieldCause::required(format!("{vp}.{src}.key"), ""));
                } else {
                    invalid_each(
                        errs,
                        &format!("{vp}.{src}.key"),
                        key,
                        is_config_map_key(key),
                    );
                }
                if se(r, "name").is_empty() {
                    errs.push(FieldCause::required(format!("{vp}.{src}.name"), ""));
                }
            }
        }
    }
    for (i, e) in arr(c, "envFrom").iter().enumerate() {
        let ep = format!("{p}.envFrom[{i}]");
        let prefix = se(e, "prefix");
        if !prefix.is_empty() {
            invalid_each(
                errs,
                &format!("{ep}.prefix"),
                prefix,
                is_env_var_name(prefix),
            );
        }
        let n = ["configMapRef", "secretRef"]
            .into_iter()
            .filter(|k| present(e, k).is_some())
            .count();
        if n == 0 {
            errs.push(FieldCause::invalid(
                &ep,
                &json!(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldCause::invalid(
                &ep,
                &json!(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_mounts(c: &Value, p: &str, volumes: &BTreeSet<String>, errs: &mut Causes) {
    let mut points = BTreeSet::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{i}]");
        let name = se(m, "name");
        if name.is_empty() {
            errs.push(FieldCause::required(format!("{mp}.name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(not_found(format!("{mp}.name"), &json!(name)));
        }
        let at = se(m, "mountPath");
        if at.is_empty() {
            errs.push(FieldCause::required(format!("{mp}.mountPath"), ""));
        }
        if !points.insert(at.to_string()) {
            errs.push(FieldCause::invalid(
                format!("{mp}.mountPath"),
                &json!(at),
                "must be unique",
            ));
        }
        let sub = se(m, "subPath");
        if !sub.is_empty() {
            validate_local_path(sub, &format!("{mp}.subPath"), errs);
        }
    }
}

/// Exactly one handler among `kinds`, and that handler's own fields.
fn validate_handler(h: &Value, p: &str, kinds: &[&str], errs: &mut Causes) {
    let mut n = 0;
    for k in kinds {
        if present(h, k).is_some() {
            if n > 0 {
                errs.push(FieldCause::forbidden(
                    format!("{p}.{k}"),
                    "may not specify more than 1 handler type",
                ));
            }
            n += 1;
        }
    }
    if n == 0 {
        errs.push(FieldCause::required(p, "must specify a handler type"));
    }
    if let Some(g) = present(h, "httpGet") {
        let gp = format!("{p}.httpGet");
        if se(g, "path").is_empty() {
            errs.push(FieldCause::required(format!("{gp}.path"), ""));
        }
        validate_port_num_or_name(g.get("port"), &format!("{gp}.port"), errs);
        match se(g, "scheme") {
            "HTTP" | "HTTPS" => {}
            other => errs.push(FieldCause::not_supported(
                format!("{gp}.scheme"),
                &json!(other),
                &["HTTP", "HTTPS"],
            )),
        }
    }
    if let Some(t) = present(h, "tcpSocket") {
        validate_port_num_or_name(t.get("port"), &format!("{p}.tcpSocket.port"), errs);
    }
    if let Some(g) = present(h, "grpc") {
        let port = int(g, "port").unwrap_or(0);
        for m in is_port_num(port) {
            errs.push(FieldCause::invalid(
                format!("{p}.grpc.port"),
                &json!(port),
                &m,
            ));
        }
    }
    if let Some(e) = present(h, "exec") {
        if arr(e, "command").is_empty() {
            errs.push(FieldCause::required(format!("{p}.exec.command"), ""));
        }
    }
    if let Some(sl) = present(h, "sleep") {
        let secs = int(sl, "seconds").unwrap_or(0);
        if secs <= 0 {
            errs.push(FieldCause::invalid(
                format!("{p}.sleep.seconds"),
                &json!(secs),
                "must be greater than 0 and less than terminationGracePeriodSeconds",
            ));
        }
    }
}

/// An IntOrString port: a number 1–65535 or an IANA port name.
pub fn validate_port_num_or_name(port: Option<&Value>, p: &str, errs: &mut Causes) {
    match port {
        Some(Value::String(name)) => invalid_each(errs, p, name, is_port_name(name)),
        Some(v) => {
            let n = v.as_i64().unwrap_or(0);
            for m in is_port_num(n) {
                errs.push(FieldCause::invalid(p, &json!(n), &m));
            }
        }
        None => {
            for m in is_port_num(0) {
                errs.push(FieldCause::invalid(p, &json!(0), &m));
            }
        }
    }
}

fn standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// Resources that may be requested below their limit (everything but extended resources
/// and huge pages).
fn overcommit_allowed(name: &str) -> bool {
    !name.starts_with("hugepages-") && (standard_container_resource(name) || native(name))
}

/// A resource name in the `kubernetes.io` domain (or without a domain).
fn native(name: &str) -> bool {
    match name.split_once('/') {
        None => true,
        Some((d, _)) => d == "kubernetes.io" || d.ends_with(".kubernetes.io"),
    }
}

fn validate_resources(res: &Value, p: &str, errs: &mut Causes) {
    let mut check = |list: &str| -> Vec<(String, Option<Quantity>, String)> {
        let mut out = Vec::new();
        let Some(m) = obj(res, list) else {
            return out;
        };
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            let fp = format!("{p}.{list}[{k}]");
            let raw = m.get(k).and_then(Value::as_str).unwrap_or("");
            invalid_each(errs, &fp, k, is_qualified_name(k));
            if !k.contains('/') {
                if !standard_container_resource(k) {
                    errs.push(FieldCause::invalid(
                        &fp,
                        &json!(k),
                        "must be a standard resource for containers",
                    ));
                }
            } else if !native(k) && k.starts_with("requests.") {
                errs.push(FieldCause::invalid(
                    &fp,
                    &json!(k),
                    "doesn't follow extended resource name standard",
                ));
            }
            let q = Quantity::parse(raw);
            match q {
                None => errs.push(FieldCause::invalid(&fp, &json!(raw), QUANTITY_FORMAT)),
                Some(q) if q.is_negative() => {
                    errs.push(FieldCause::invalid(&fp, &json!(raw), IS_NEGATIVE))
                }
                Some(q) if !native(k) && !q.is_integer() => {
                    errs.push(FieldCause::invalid(&fp, &json!(raw), "must be an integer"))
                }
                _ => {}
            }
            out.push((k.clone(), q, raw.to_string()));
        }
        out
    };
    let limits = check("limits");
    let requests = check("requests");
    for (k, q, raw) in &requests {
        match limits.iter().find(|(lk, _, _)| lk == k) {
            Some((_, lq, lraw)) => {
                let (Some(q), Some(lq)) = (q, lq) else {
                    continue;
                };
                if q != lq && !overcommit_allowed(k) {
                    errs.push(FieldCause::invalid(
                        format!("{p}.requests"),
                        &json!(raw),
                        &format!("must be equal to {k} limit of {lraw}"),
                    ));
                } else if q > lq {
                    errs.push(FieldCause::invalid(
                        format!("{p}.requests"),
                        &json!(raw),
                        &format!("must be less than or equal to {k} limit of {lraw}"),
                    ));
                }
            }
            None if !overcommit_allowed(k) => errs.push(FieldCause::required(
                format!("{p}.limits"),
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
}

/// Validates tolerations at `path`.
pub fn validate_tolerations(list: &[Value], path: &str, errs: &mut Causes) {
    for (i, t) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let key = se(t, "key");
        let op = se(t, "operator");
        let effect = se(t, "effect");
        if !key.is_empty() {
            invalid_each(errs, &format!("{p}.key"), key, is_qualified_name(key));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldCause::invalid(
                format!("{p}.operator"),
                &json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if present(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldCause::invalid(
                format!("{p}.effect"),
                &json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let v = se(t, "value");
                let msgs = is_label_value(v);
                if !msgs.is_empty() {
                    errs.push(FieldCause::invalid(
                        format!("{p}.operator"),
                        &json!(v),
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !se(t, "value").is_empty() {
                    errs.push(FieldCause::invalid(
                        format!("{p}.operator"),
                        t,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldCause::not_supported(
                format!("{p}.operator"),
                &json!(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            validate_taint_effect(effect, &format!("{p}.effect"), errs);
        }
    }
}

/// A taint effect: NoSchedule, PreferNoSchedule or NoExecute.
pub fn validate_taint_effect(effect: &str, p: &str, errs: &mut Causes) {
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        errs.push(FieldCause::not_supported(
            p,
            &json!(effect),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
    }
}

/// The Forbidden message of a pod update that touches an immutable part of the spec.
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The update rules of a Pod's spec (`ValidatePodUpdate`): containers may not be added or
/// removed; images, `activeDeadlineSeconds` (set or lowered), tolerations (additions, and
/// changes of `tolerationSeconds`), scheduling gates (removals) and a negative
/// `terminationGracePeriodSeconds` (to 1) may change; nothing else may.
pub fn validate_pod_update(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    for list in ["containers", "initContainers"] {
        let (nc, oc) = (arr(ns, list), arr(os, list));
        if nc.len() != oc.len() {
            errs.push(FieldCause::forbidden(
                format!("spec.{list}"),
                "pod updates may not add or remove containers",
            ));
            return;
        }
        for (i, c) in nc.iter().enumerate() {
            let image = se(c, "image");
            if image.is_empty() {
                errs.push(FieldCause::required(format!("spec.{list}[{i}].image"), ""));
            } else if image.trim() != image {
                errs.push(FieldCause::invalid(
                    format!("spec.{list}[{i}].image"),
                    &json!(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    match (
        int(ns, "activeDeadlineSeconds"),
        int(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldCause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(n),
                &inclusive_range(0, i64::from(i32::MAX)),
            ));
            return;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldCause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(n),
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => errs.push(FieldCause::invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    // Tolerations: every old one must still be there (tolerationSeconds may change).
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new_tol: Vec<Value> = arr(ns, "tolerations").iter().map(strip).collect();
    if arr(os, "tolerations")
        .iter()
        .any(|t| !new_tol.contains(&strip(t)))
    {
        errs.push(FieldCause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    let old_gates: Vec<&Value> = arr(os, "schedulingGates").iter().collect();
    for g in arr(ns, "schedulingGates") {
        if !old_gates.contains(&g) {
            errs.push(FieldCause::forbidden(
                "spec.schedulingGates",
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    se(g, "name")
                ),
            ));
        }
    }

    // Everything else must be equal: copy the mutable parts of the old spec over a copy
    // of the new one and compare.
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (c, o) in cs.iter_mut().zip(arr(os, list)) {
                    if let (Some(c), Some(img)) = (c.as_object_mut(), o.get("image")) {
                        c.insert("image".into(), img.clone());
                    }
                }
            }
        }
        for key in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
            match os.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = int(os, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0) && int(ns, "terminationGracePeriodSeconds") == Some(1) {
            m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
    }
    if &munged != os {
        let mut diff = Vec::new();
        json_diff(os, &munged, "spec", &mut diff);
        let mut msg = POD_UPDATE_FORBIDDEN.to_string();
        for line in diff.iter().take(8) {
            msg.push_str("\n  ");
            msg.push_str(line);
        }
        if diff.len() > 8 {
            msg.push_str(&format!("\n  ... and {} more", diff.len() - 8));
        }
        errs.push(FieldCause::forbidden("spec", &msg));
    }
}

/// Lists the leaves that differ between `a` and `b`, as `path: old -> new`.
fn json_diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if va != vb {
                    json_diff(va, vb, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if va != vb {
                    json_diff(va, vb, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => out.push(format!("{path}: {a} -> {b}")),
    }
}

/// Sanity of a Pod status written through the status subresource: a known phase, no way
/// back from a terminal phase, valid pod and host IPs.
pub fn validate_pod_status(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let st = new.get("status").unwrap_or(&null);
    let ost = old.get("status").unwrap_or(&null);
    let phase = se(st, "phase");
    const PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];
    if !phase.is_empty() && !PHASES.contains(&phase) {
        errs.push(FieldCause::not_supported(
            "status.phase",
            &json!(phase),
            PHASES,
        ));
    }
    let old_phase = se(ost, "phase");
    if matches!(old_phase, "Succeeded" | "Failed") && phase != old_phase {
        errs.push(FieldCause::forbidden(
            "status.phase",
            &format!("cannot transition from terminal phase {old_phase} to {phase}"),
        ));
    }
    for key in ["podIP", "hostIP"] {
        if let Some(ip) = s(st, key).filter(|ip| !ip.is_empty()) {
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(FieldCause::invalid(
                    format!("status.{key}"),
                    &json!(ip),
                    super::service::IP_MSG,
                ));
            }
        }
    }
    for (i, p) in arr(st, "podIPs").iter().enumerate() {
        let ip = se(p, "ip");
        if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldCause::invalid(
                format!("status.podIPs[{i}]"),
                &json!(ip),
                super::service::IP_MSG,
            ));
        }
    }
    let nominated = se(st, "nominatedNodeName");
    if !nominated.is_empty() {
        invalid_each(
            errs,
            "status.nominatedNodeName",
            nominated,
            is_dns1123_subdomain(nominated),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_pod_image_tag() {
        assert_eq!(image_tag("nginx"), Some("latest"));
        assert_eq!(image_tag("nginx:latest"), Some("latest"));
        assert_eq!(image_tag("nginx:1.25"), Some("1.25"));
        assert_eq!(image_tag("localhost:5000/app"), Some("latest"));
        assert_eq!(image_tag("localhost:5000/app:v1"), Some("v1"));
        assert_eq!(image_tag("registry.example.com/My/app:v1"), None);
        assert_eq!(image_tag("nginx@sha256:abc"), None);
        assert_eq!(image_tag("nginx:1.2@sha256:abc"), Some("1.2"));
        assert_eq!(image_tag("Nginx"), None);
        assert_eq!(image_tag(""), None);
    }

    #[test]
    fn validation_pod_qos() {
        let c = |res: Value| json!({"containers": [{"name": "a", "resources": res}]});
        assert_eq!(qos_class(&c(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&c(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&c(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
