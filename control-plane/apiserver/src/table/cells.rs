//! The cells of one row per resource, in the order of the resource's columns (wide cells
//! included), computed as Kubernetes's printers compute them.
//!
//! Each function reads an object in Kubernetes JSON and never fails. Where the API server
//! would have defaulted a field before storing (a Deployment's `spec.replicas` to 1, a
//! Service's `type` to `ClusterIP`, a port's `protocol` to `TCP`), a missing field prints
//! as that default, so the row matches what a real cluster shows.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::{age, arr_at, at, int_at, map_len, obj_at, since, str_at, time_at};
use crate::selector::LabelSelector;

/// One row: its cells and, for pods that finished, the `Completed` row condition.
pub(super) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Row {
        Row {
            cells,
            conditions: None,
        }
    }
}

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

/// `<none>` for an empty string, as the printers show absent values.
fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// The first condition of `ty` in a `conditions` list.
fn condition<'a>(conditions: &'a [Value], ty: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| str_at(c, &["type"]) == ty)
}

/// Container names and images joined by commas (the Containers and Images columns).
fn containers_and_images(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// A label map as `k=v,k2=v2` sorted by key, `<none>` when empty (`labels.FormatLabels`).
fn format_labels(v: Option<&Value>) -> String {
    let mut pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    // serde_json maps iterate in key order unless `preserve_order` is on; sort anyway.
    pairs.sort();
    or_none(&pairs.join(","))
}

/// Up to three items joined by commas, then ` + N more...`; `<unset>` when empty.
fn list_with_more(items: &[String], max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        "<unset>".to_string()
    } else {
        shown
    }
}

// --- pods -------------------------------------------------------------------------------

/// Whether an init container is a sidecar (`restartPolicy: Always`), which counts as a
/// regular container once started.
fn is_restartable(spec: &Value) -> bool {
    str_at(spec, &["restartPolicy"]) == "Always"
}

/// When the container last terminated before its current run, if known.
fn last_termination(status: &Value) -> Option<Timestamp> {
    obj_at(status, &["lastState", "terminated"]).and_then(|t| time_at(t, &["finishedAt"]))
}

/// `Signal:9`/`ExitCode:1` (with a prefix for init containers) when a termination has no
/// reason.
fn termination_reason(terminated: &Value, prefix: &str) -> String {
    let reason = str_at(terminated, &["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(terminated, &["signal"]).unwrap_or(0);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        let code = int_at(terminated, &["exitCode"]).unwrap_or(0);
        format!("{prefix}ExitCode:{code}")
    }
}

/// Name, Ready, Status, Restarts, Age, IP, Node, Nominated Node, Readiness Gates.
///
/// Status is the printer's summary: the phase (or `status.reason`, e.g. `Evicted`),
/// `SchedulingGated`, then `Init:<reason>`/`Init:<i>/<n>` while init containers run, else
/// the last container's waiting or terminated reason (`ContainerCreating`,
/// `CrashLoopBackOff`, `Completed`, `Error`, `ExitCode:1`), `Running`/`NotReady` when a
/// container still runs after another completed, and `Terminating` (or `Unknown` for a
/// lost node) once deletion started. Restarts reads `3 (2m ago)` when the last
/// termination time is known.
pub(super) fn pod(pod: &Value, now: Timestamp) -> Row {
    let spec_containers = arr_at(pod, &["spec", "containers"]);
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let conditions = arr_at(pod, &["status", "conditions"]);
    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);

    let restartable: Vec<&str> = init_specs
        .iter()
        .filter(|c| is_restartable(c))
        .map(|c| str_at(c, &["name"]))
        .collect();
    let total = spec_containers.len() + restartable.len();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(cs, &["restartCount"]).unwrap_or(0);
        restarts = restarts.saturating_add(count);
        let terminated_at = last_termination(cs);
        last_restart = last_restart.max(terminated_at);
        let sidecar = restartable.contains(&str_at(cs, &["name"]));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = last_sidecar_restart.max(terminated_at);
        }
        let terminated = obj_at(cs, &["state", "terminated"]);
        let waiting_reason = obj_at(cs, &["state", "waiting"]).map(|w| str_at(w, &["reason"]));
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]).unwrap_or(0) == 0) {
            continue;
        }
        if sidecar && at(cs, &["started"]).and_then(Value::as_bool) == Some(true) {
            if at(cs, &["ready"]).and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = match (terminated, waiting_reason) {
            (Some(t), _) => termination_reason(t, "Init:"),
            (None, Some(w)) if !w.is_empty() && w != "PodInitializing" => format!("Init:{w}"),
            _ => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == "Initialized" && str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        let mut error_reason = None;
        for cs in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int_at(cs, &["restartCount"]).unwrap_or(0));
            last_restart = last_restart.max(last_termination(cs));
            let waiting_reason = obj_at(cs, &["state", "waiting"])
                .map(|w| str_at(w, &["reason"]))
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting_reason {
                reason = w.to_string();
            } else if let Some(t) = obj_at(cs, &["state", "terminated"]) {
                reason = termination_reason(t, "");
                if int_at(t, &["exitCode"]).unwrap_or(0) != 0 {
                    error_reason = Some(reason.clone());
                }
            } else if at(cs, &["ready"]).and_then(Value::as_bool) == Some(true)
                && obj_at(cs, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" {
            let pod_ready =
                condition(conditions, "Ready").is_some_and(|c| str_at(c, &["status"]) == "True");
            if has_running && pod_ready {
                reason = "Running".to_string();
            } else if let Some(e) = error_reason {
                reason = e;
            } else if has_running {
                reason = "NotReady".to_string();
            }
        }
    }

    let deleting = at(pod, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(now, Some(t))),
        _ => restarts.to_string(),
    };

    let pod_ip = at(pod, &["status", "podIPs"])
        .and_then(Value::as_array)
        .and_then(|ips| ips.first())
        .map(|ip| str_at(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passing = gates
            .iter()
            .filter(|g| {
                condition(conditions, str_at(g, &["conditionType"]))
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    let conditions_out = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                                    "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed",
                                 "message": "The pod failed."}]),
        ),
        _ => None,
    };

    Row {
        cells: vec![
            name(pod),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            json!(age(pod, now)),
            json!(or_none(pod_ip)),
            json!(or_none(str_at(pod, &["spec", "nodeName"]))),
            json!(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
            json!(readiness_gates),
        ],
        conditions: conditions_out,
    }
}

// --- workloads --------------------------------------------------------------------------

/// Name, Ready (`ready/desired`), Up-to-date, Available, Age, Containers, Images, Selector.
pub(super) fn deployment(d: &Value, now: Timestamp) -> Vec<Value> {
    let desired = int_at(d, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(d, &["status", "readyReplicas"]).unwrap_or(0);
    let (names, images) =
        containers_and_images(arr_at(d, &["spec", "template", "spec", "containers"]));
    let selector =
        match LabelSelector::from_json(at(d, &["spec", "selector"]).unwrap_or(&Value::Null)) {
            Ok(s) => s.to_string(),
            Err(_) => "<invalid>".to_string(),
        };
    vec![
        name(d),
        json!(format!("{ready}/{desired}")),
        json!(int_at(d, &["status", "updatedReplicas"]).unwrap_or(0)),
        json!(int_at(d, &["status", "availableReplicas"]).unwrap_or(0)),
        json!(age(d, now)),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

/// Name, Desired, Current, Ready, Age, Containers, Images, Selector.
pub(super) fn replicaset(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) =
        containers_and_images(arr_at(rs, &["spec", "template", "spec", "containers"]));
    let selector =
        match LabelSelector::from_json(at(rs, &["spec", "selector"]).unwrap_or(&Value::Null)) {
            Ok(s) => or_none(&s.to_string()),
            Err(_) => "<error>".to_string(),
        };
    vec![
        name(rs),
        json!(int_at(rs, &["spec", "replicas"]).unwrap_or(1)),
        json!(int_at(rs, &["status", "replicas"]).unwrap_or(0)),
        json!(int_at(rs, &["status", "readyReplicas"]).unwrap_or(0)),
        json!(age(rs, now)),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

// --- nodes ------------------------------------------------------------------------------

/// Name, Status, Roles, Age, Version, Internal-IP, External-IP, OS-Image, Kernel-Version,
/// Container-Runtime.
///
/// Status is `Ready`/`NotReady` from the Ready condition (`Unknown` without one), plus
/// `,SchedulingDisabled` when cordoned. Roles come from `node-role.kubernetes.io/<role>`
/// and `kubernetes.io/role=<role>` labels, sorted, `<none>` without any.
pub(super) fn node(n: &Value, now: Timestamp) -> Vec<Value> {
    // A later duplicate condition wins, as in the printer's map.
    let ready = arr_at(n, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(n, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = at(n, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles: Vec<String> = roles.into_iter().collect();

    let address = |ty: &str| {
        arr_at(n, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == ty)
            .map(|a| str_at(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| {
        let v = str_at(n, &["status", "nodeInfo", field]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name(n),
        json!(status.join(",")),
        json!(or_none(&roles.join(","))),
        json!(age(n, now)),
        json!(str_at(n, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

// --- services and endpoints ---------------------------------------------------------------

fn strings(list: &[Value]) -> Vec<&str> {
    list.iter().filter_map(Value::as_str).collect()
}

/// The External-IP cell: external IPs for ClusterIP/NodePort (`<none>` without), the load
/// balancer's addresses (`<pending>` until it has some) for LoadBalancer, the DNS name
/// for ExternalName.
fn external_ip(svc: &Value, ty: &str) -> String {
    let external = strings(arr_at(svc, &["spec", "externalIPs"]));
    match ty {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = arr_at(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| {
                    let ip = str_at(i, &["ip"]);
                    if ip.is_empty() {
                        str_at(i, &["hostname"])
                    } else {
                        ip
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            if all.is_empty() && external.is_empty() {
                return "<pending>".to_string();
            }
            all.extend(external);
            all.join(",")
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `80/TCP`, `80:30080/TCP` (with a node port), joined by commas.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = match str_at(p, &["protocol"]) {
                "" => "TCP",
                other => other,
            };
            match int_at(p, &["nodePort"]).filter(|n| *n > 0) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

/// Name, Type, Cluster-IP, External-IP, Port(s), Age, Selector.
pub(super) fn service(svc: &Value, now: Timestamp) -> Vec<Value> {
    let ty = match str_at(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        other => other,
    };
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| str_at(svc, &["spec", "clusterIP"]));
    vec![
        name(svc),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external_ip(svc, ty)),
        json!(service_ports(svc)),
        json!(age(svc, now)),
        json!(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// `ip:port` (`[ip]:port` for IPv6), as `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The Endpoints cell: the first three `ip:port` pairs (bare IPs for port-less subsets),
/// then ` + N more...`; `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut shown = Vec::new();
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            for a in addresses {
                if shown.len() < MAX {
                    shown.push(str_at(a, &["ip"]).to_string());
                }
                count += 1;
            }
        } else {
            for p in ports {
                let port = int_at(p, &["port"]).unwrap_or(0);
                for a in addresses {
                    if shown.len() < MAX {
                        shown.push(join_host_port(str_at(a, &["ip"]), port));
                    }
                    count += 1;
                }
            }
        }
    }
    let joined = shown.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// Name, Endpoints, Age.
pub(super) fn endpoints(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), json!(age(ep, now))]
}

/// Name, AddressType, Ports, Endpoints, Age.
pub(super) fn endpointslice(s: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = arr_at(s, &["ports"])
        .iter()
        .map(|p| match int_at(p, &["port"]) {
            Some(n) => n.to_string(),
            None => match at(p, &["name"]).and_then(Value::as_str) {
                Some(name) => name.to_string(),
                None => "*".to_string(),
            },
        })
        .collect();
    let addresses: Vec<String> = arr_at(s, &["endpoints"])
        .iter()
        .flat_map(|e| strings(arr_at(e, &["addresses"])))
        .map(str::to_string)
        .collect();
    vec![
        name(s),
        json!(str_at(s, &["addressType"])),
        json!(list_with_more(&ports, 3)),
        json!(list_with_more(&addresses, 3)),
        json!(age(s, now)),
    ]
}

// --- events -----------------------------------------------------------------------------

/// Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count, Name.
///
/// First Seen falls back to `eventTime`, Last Seen to First Seen; a series overrides Last
/// Seen and Count; a count of 0 (new-style singleton events) prints as 1. Object is
/// `kind/name` with the kind lowercased. Source is `component, host`, taken from
/// `reportingComponent`/`reportingInstance` when `source` is empty.
pub(super) fn event(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match time_at(ev, &["firstTimestamp"]) {
        Some(t) => since(now, Some(t)),
        None => since(now, time_at(ev, &["eventTime"])),
    };
    let mut last = match time_at(ev, &["lastTimestamp"]) {
        Some(t) => since(now, Some(t)),
        None => first.clone(),
    };
    let mut count = int_at(ev, &["count"]).unwrap_or(0);
    if let Some(series) = obj_at(ev, &["series"]) {
        last = since(now, time_at(series, &["lastObservedTime"]));
        count = int_at(series, &["count"]).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }

    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let object = match str_at(ev, &["involvedObject", "name"]) {
        "" => kind,
        obj_name => format!("{kind}/{obj_name}"),
    };

    let first_non_empty = |a: &'static [&'static str], b: &'static [&'static str]| {
        let v = str_at(ev, a);
        if v.is_empty() {
            str_at(ev, b)
        } else {
            v
        }
    };
    let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
    let host = first_non_empty(&["source", "host"], &["reportingInstance"]);
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };

    vec![
        json!(last),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(object),
        json!(str_at(ev, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(str_at(ev, &["message"]).trim()),
        json!(first),
        json!(count),
        name(ev),
    ]
}

// --- small resources --------------------------------------------------------------------

/// Name, Status (the phase), Age.
pub(super) fn namespace(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(ns),
        json!(str_at(ns, &["status", "phase"])),
        json!(age(ns, now)),
    ]
}

/// Name, Data (keys of `data` and `binaryData`), Age.
pub(super) fn configmap(cm: &Value, now: Timestamp) -> Vec<Value> {
    let keys = map_len(cm, &["data"]) + map_len(cm, &["binaryData"]);
    vec![name(cm), json!(keys), json!(age(cm, now))]
}

/// Name, Type, Data (keys of `data`), Age.
pub(super) fn secret(s: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(s),
        json!(str_at(s, &["type"])),
        json!(map_len(s, &["data"])),
        json!(age(s, now)),
    ]
}

/// Name, Holder (`spec.holderIdentity`), Age.
pub(super) fn lease(l: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(l),
        json!(str_at(l, &["spec", "holderIdentity"])),
        json!(age(l, now)),
    ]
}

/// Name, Age.
pub(super) fn default(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), json!(age(obj, now))]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn pod_cells(p: &Value) -> Vec<Value> {
        pod(p, now()).cells
    }

    fn running_container(name: &str, restarts: i64) -> Value {
        json!({"name": name, "ready": true, "restartCount": restarts, "image": "nginx",
               "started": true, "state": {"running": {"startedAt": "2024-05-01T11:00:00Z"}}})
    }

    #[test]
    fn running_pod_with_restarts() {
        let p = json!({
            "metadata": {"name": "web-7d4b9c-x2k4p", "namespace": "default",
                         "creationTimestamp": "2024-04-30T09:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "proxy"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 3,
                     "state": {"running": {"startedAt": "2024-05-01T11:58:00Z"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                  "finishedAt": "2024-05-01T11:58:00Z"}}},
                    running_container("proxy", 0)
                ]
            }
        });
        let row = pod(&p, now());
        assert_eq!(
            row.cells,
            vec![
                json!("web-7d4b9c-x2k4p"),
                json!("2/2"),
                json!("Running"),
                json!("3 (2m ago)"),
                json!("27h"),
                json!("10.244.1.7"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        assert!(row.conditions.is_none());
    }

    #[test]
    fn pending_and_creating_pods() {
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
                             "status": {"phase": "Pending"}});
        let c = pod_cells(&pending);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Pending");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "<unknown>");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");

        let creating = json!({"spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_cells(&creating)[2], "ContainerCreating");

        let gated = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(pod_cells(&gated)[2], "SchedulingGated");

        let evicted = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        let row = pod(&evicted, now());
        assert_eq!(row.cells[2], "Evicted");
        assert_eq!(row.conditions.unwrap()[0]["reason"], "Failed");
    }

    #[test]
    fn crash_looping_pod() {
        let p = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 5,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:30Z"}}}]}});
        let c = pod_cells(&p);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "5 (30s ago)");
    }

    #[test]
    fn completed_and_failed_pods() {
        let done = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let row = pod(&done, now());
        assert_eq!(row.cells[1], "0/1");
        assert_eq!(row.cells[2], "Completed");
        assert_eq!(
            row.conditions.unwrap(),
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );

        let err = json!({"spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 2}}}]}});
        assert_eq!(pod_cells(&err)[2], "ExitCode:2");
        let killed = json!({"status": {"containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}});
        assert_eq!(pod_cells(&killed)[2], "Signal:9");

        // One container completed while another still runs: Running if the pod is Ready,
        // the failing container's reason if one failed, else NotReady.
        let mixed = |ready: &str, other_exit: i64| {
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": ready}],
                    // Statuses are read last to first: the first one's reason wins.
                    "containerStatuses": [
                        {"name": "a", "ready": false,
                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "b", "ready": true, "state": {"running": {}}},
                        {"name": "c", "ready": false,
                         "state": {"terminated": {"exitCode": other_exit, "reason": "Error"}}}]}})
        };
        assert_eq!(pod_cells(&mixed("True", 0))[2], "Running");
        assert_eq!(pod_cells(&mixed("False", 1))[2], "Error");
        assert_eq!(pod_cells(&mixed("False", 0))[2], "NotReady");
        assert_eq!(pod_cells(&mixed("True", 0))[1], "1/3");
    }

    #[test]
    fn terminating_pods() {
        let mut p = json!({"metadata": {"name": "p", "deletionTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [running_container("a", 0)]}});
        assert_eq!(pod_cells(&p)[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_cells(&p)[2], "Unknown");
        let done = json!({"metadata": {"deletionTimestamp": "2024-05-01T11:59:00Z"},
            "status": {"phase": "Succeeded"}});
        assert_eq!(pod_cells(&done)[2], "Succeeded");
    }

    #[test]
    fn init_containers() {
        let base = |statuses: Value| {
            json!({"spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}],
                            "containers": [{"name": "a"}]},
                   "status": {"phase": "Pending", "initContainerStatuses": statuses,
                              "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}})
        };
        let running_first = base(json!([
            {"name": "i1", "state": {"running": {}}},
            {"name": "i2", "state": {"waiting": {"reason": "PodInitializing"}}}]));
        assert_eq!(pod_cells(&running_first)[2], "Init:0/2");
        let second = base(json!([
            {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "i2", "state": {"running": {}}}]));
        assert_eq!(pod_cells(&second)[2], "Init:1/2");
        let crashing = base(json!([
            {"name": "i1", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:50:00Z"}}}]));
        let c = pod_cells(&crashing);
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "4 (10m ago)");
        let failed = base(json!([{"name": "i1", "state": {"terminated": {"exitCode": 3}}}]));
        assert_eq!(pod_cells(&failed)[2], "Init:ExitCode:3");
        let oom = base(
            json!([{"name": "i1", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]),
        );
        assert_eq!(pod_cells(&oom)[2], "Init:OOMKilled");
        // Init containers done: the regular containers decide.
        let done = base(json!([
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "state": {"terminated": {"exitCode": 0}}}]));
        assert_eq!(pod_cells(&done)[2], "PodInitializing");
    }

    #[test]
    fn sidecar_containers_count_as_containers() {
        let p = json!({
            "spec": {"initContainers": [{"name": "mesh", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "mesh", "ready": true, "started": true, "restartCount": 1,
                     "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:00:00Z"}}}],
                "containerStatuses": [running_container("app", 0)]}});
        let c = pod_cells(&p);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1 (60m ago)");
    }

    #[test]
    fn readiness_gates_and_nominated_node() {
        let p = json!({
            "spec": {"containers": [{"name": "a"}],
                     "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
            "status": {"phase": "Pending", "nominatedNodeName": "n9",
                       "conditions": [{"type": "example.com/lb", "status": "True"},
                                      {"type": "example.com/dns", "status": "False"}]}});
        let c = pod_cells(&p);
        assert_eq!(c[7], "n9");
        assert_eq!(c[8], "1/2");
    }

    #[test]
    fn deployment_cells() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:55:00Z"},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                         {"name": "app", "image": "nginx:1.27"},
                         {"name": "sidecar", "image": "envoy:v1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            deployment(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("app,sidecar"),
                json!("nginx:1.27,envoy:v1"),
                json!("app=web")
            ]
        );
        // Fresh deployment: no status yet, replicas defaulted.
        let fresh = json!({"metadata": {"name": "api"}, "spec": {"selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]}]}}});
        let c = deployment(&fresh, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], 0);
        assert_eq!(c[7], "tier in (a,b)");
        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}});
        assert_eq!(deployment(&bad, now())[7], "<invalid>");
    }

    #[test]
    fn replicaset_cells() {
        let rs = json!({
            "metadata": {"name": "web-7d4b9c", "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"replicas": 3, "readyReplicas": 1}
        });
        assert_eq!(
            replicaset(&rs, now()),
            vec![
                json!("web-7d4b9c"),
                json!(3),
                json!(3),
                json!(1),
                json!("120m"),
                json!("app"),
                json!("nginx"),
                json!("app=web,pod-template-hash=7d4b9c")
            ]
        );
        let c = replicaset(&json!({"spec": {"selector": {}}}), now());
        assert_eq!(c[7], "<none>");
        let c = replicaset(
            &json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}}),
            now(),
        );
        assert_eq!(c[7], "<error>");
    }

    #[test]
    fn node_cells() {
        let n = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2024-04-14T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "",
                                    "node-role.kubernetes.io/etcd": "",
                                    "kubernetes.io/role": "master",
                                    "node-role.kubernetes.io/": "",
                                    "kubernetes.io/hostname": "node-1"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-1"},
                              {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"}
            }
        });
        assert_eq!(
            node(&n, now()),
            vec![
                json!("node-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,etcd,master"),
                json!("17d"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("containerd://1.7.13")
            ]
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = node(&not_ready, now());
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[7], "<unknown>");
        assert_eq!(node(&json!({}), now())[1], "Unknown");
    }

    #[test]
    fn service_cells() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                     "selector": {"tier": "front", "app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            service(&svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.12.34"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("60m"),
                json!("app=web,tier=front")
            ]
        );
        let plain = json!({"spec": {"clusterIP": "None", "ports": [{"port": 8080}]}});
        let c = service(&plain, now());
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
        assert_eq!(c[4], "8080/TCP");
        assert_eq!(c[6], "<none>");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": []}});
        let c = service(&lb, now());
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        let lb = json!({"spec": {"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "5.6.7.8"}]}}});
        assert_eq!(service(&lb, now())[3], "5.6.7.8,lb.example.com,1.2.3.4");
        let ext = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(service(&ext, now())[3], "db.example.com");
        let with_ext = json!({"spec": {"externalIPs": ["1.1.1.1", "2.2.2.2"]}});
        assert_eq!(service(&with_ext, now())[3], "1.1.1.1,2.2.2.2");
    }

    #[test]
    fn endpoints_cells() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            endpoints(&ep, now())[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        let small = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]},
                                       {"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(endpoints(&small, now())[1], "[fd00::1]:80,10.0.0.9");
        assert_eq!(endpoints(&json!({"subsets": []}), now())[1], "<none>");
        assert_eq!(endpoints(&json!({}), now())[1], "<none>");
    }

    #[test]
    fn endpointslice_cells() {
        let s = json!({"metadata": {"name": "web-abc12"}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "dns"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]},
                          {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            endpointslice(&s, now()),
            vec![
                json!("web-abc12"),
                json!("IPv4"),
                json!("80,dns,*"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("<unknown>")
            ]
        );
        let empty = endpointslice(&json!({"addressType": "IPv6"}), now());
        assert_eq!(empty[2], "<unset>");
        assert_eq!(empty[3], "<unset>");
    }

    #[test]
    fn event_cells() {
        let ev = json!({
            "metadata": {"name": "web-x2k4p.17c2f3a1b2c3d4e5", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-x2k4p", "namespace": "default",
                               "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container app\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:59:50Z",
            "count": 12
        });
        assert_eq!(
            event(&ev, now()),
            vec![
                json!("10s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-x2k4p"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting failed container app"),
                json!("60m"),
                json!(12),
                json!("web-x2k4p.17c2f3a1b2c3d4e5")
            ]
        );
        // New-style event: eventTime only, reporting controller, no count.
        let ev = json!({"metadata": {"name": "e"}, "eventTime": "2024-05-01T11:58:00.123456Z",
            "reportingComponent": "skiff-scheduler", "reason": "Scheduled", "type": "Normal",
            "involvedObject": {"kind": "Node"}});
        let c = event(&ev, now());
        assert_eq!(c[0], "119s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "skiff-scheduler");
        assert_eq!(c[7], "119s");
        assert_eq!(c[8], 1);
        // A series overrides Last Seen and Count.
        let ev = json!({"firstTimestamp": "2024-05-01T10:00:00Z",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:00.000000Z"}});
        let c = event(&ev, now());
        assert_eq!(c[0], "60s");
        assert_eq!(c[7], "120m");
        assert_eq!(c[8], 7);
        assert_eq!(event(&json!({}), now())[0], "<unknown>");
    }

    #[test]
    fn small_resource_cells() {
        let n = now();
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-03-01T12:00:00Z"},
                        "status": {"phase": "Active"}});
        assert_eq!(
            namespace(&ns, n),
            vec![json!("kube-system"), json!("Active"), json!("61d")]
        );
        let cm =
            json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            configmap(&cm, n),
            vec![json!("cfg"), json!(2), json!("<unknown>")]
        );
        let s = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                       "data": {"tls.crt": "x", "tls.key": "y"}});
        assert_eq!(
            secret(&s, n),
            vec![
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("<unknown>")
            ]
        );
        let l = json!({"metadata": {"name": "skiff-scheduler", "creationTimestamp": "2022-01-01T00:00:00Z"},
                       "spec": {"holderIdentity": "apiserver-1_abc"}});
        assert_eq!(
            lease(&l, n),
            vec![
                json!("skiff-scheduler"),
                json!("apiserver-1_abc"),
                json!("2y121d")
            ]
        );
        assert_eq!(lease(&json!({"spec": {}}), n)[1], "");
    }
}
