//! `meta.k8s.io/v1 Table` output for `kubectl get`.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! columns the server sends, so the server decides what `kubectl get pods` shows. The
//! columns and cells here follow Kubernetes's printers (`pkg/printers/internalversion`):
//! the same column names and priorities, and the same cell text (`1/2`,
//! `CrashLoopBackOff`, `3 (2m ago)`, `80:30080/TCP`, `Ready,SchedulingDisabled`, …), so
//! scripts and habits carry over.
//!
//! Like Kubernetes's server, every row carries the wide (priority 1) cells too; kubectl
//! hides them unless asked for `-o wide`.
//!
//! Printers read the objects as JSON and never fail: a missing or malformed field prints
//! as Kubernetes would print the field's zero value (or the API default the server would
//! have stored), so a half-written object still lists.

mod cells;
mod columns;

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// What each row's `object` holds: the `includeObject` query parameter of a Table request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object: the rows carry only cells.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default): enough for
    /// kubectl to know names, namespaces and labels (`--show-labels`, `-L`).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses `includeObject`: `None`, `Metadata` or `Object` (case-sensitive, as
    /// Kubernetes); absent or empty means `Metadata`. Anything else is 400 `BadRequest`
    /// `unrecognized includeObject value: "<v>"`.
    pub fn parse(s: Option<&str>) -> Result<IncludeObject, ApiError> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "unrecognized includeObject value: {}",
                serde_json::Value::String(other.to_string())
            ))),
        }
    }
}

/// Which printer a resource uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    Node,
    Service,
    Endpoints,
    EndpointSlice,
    Event,
    Namespace,
    ConfigMap,
    Secret,
    Lease,
    Default,
}

impl Printer {
    fn of(group: &str, plural: &str) -> Printer {
        match (group, plural) {
            ("", "pods") => Printer::Pod,
            ("apps", "deployments") => Printer::Deployment,
            ("apps", "replicasets") => Printer::ReplicaSet,
            ("", "nodes") => Printer::Node,
            ("", "services") => Printer::Service,
            ("", "endpoints") => Printer::Endpoints,
            ("discovery.k8s.io", "endpointslices") => Printer::EndpointSlice,
            ("", "events") => Printer::Event,
            ("", "namespaces") => Printer::Namespace,
            ("", "configmaps") => Printer::ConfigMap,
            ("", "secrets") => Printer::Secret,
            ("coordination.k8s.io", "leases") => Printer::Lease,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [columns::Col] {
        match self {
            Printer::Pod => columns::POD,
            Printer::Deployment => columns::DEPLOYMENT,
            Printer::ReplicaSet => columns::REPLICASET,
            Printer::Node => columns::NODE,
            Printer::Service => columns::SERVICE,
            Printer::Endpoints => columns::ENDPOINTS,
            Printer::EndpointSlice => columns::ENDPOINTSLICE,
            Printer::Event => columns::EVENT,
            Printer::Namespace => columns::NAMESPACE,
            Printer::ConfigMap => columns::CONFIGMAP,
            Printer::Secret => columns::SECRET,
            Printer::Lease => columns::LEASE,
            Printer::Default => columns::DEFAULT,
        }
    }

    fn row(self, obj: &Value, now: jiff::Timestamp) -> cells::Row {
        match self {
            Printer::Pod => cells::pod(obj, now),
            Printer::Deployment => cells::deployment(obj, now).into(),
            Printer::ReplicaSet => cells::replicaset(obj, now).into(),
            Printer::Node => cells::node(obj, now).into(),
            Printer::Service => cells::service(obj, now).into(),
            Printer::Endpoints => cells::endpoints(obj, now).into(),
            Printer::EndpointSlice => cells::endpointslice(obj, now).into(),
            Printer::Event => cells::event(obj, now).into(),
            Printer::Namespace => cells::namespace(obj, now).into(),
            Printer::ConfigMap => cells::configmap(obj, now).into(),
            Printer::Secret => cells::secret(obj, now).into(),
            Printer::Lease => cells::lease(obj, now).into(),
            Printer::Default => cells::default(obj, now).into(),
        }
    }
}

/// The `columnDefinitions` of resource (group, plural): what [`to_table`] puts in a Table.
/// Exposed for watches, which send the definitions once and then rows alone.
pub fn column_definitions(group: &str, plural: &str) -> Vec<Value> {
    Printer::of(group, plural)
        .columns()
        .iter()
        .map(columns::Col::to_json)
        .collect()
}

/// A `meta.k8s.io/v1 Table` of `items` (objects in Kubernetes JSON) of resource
/// (group, plural).
///
/// `list_meta` is the list's metadata (`resourceVersion`, `continue`,
/// `remainingItemCount`), copied as the Table's metadata so kubectl can page and watch
/// from it; anything but an object becomes `{}`. `include` decides each row's `object`
/// (omitted for [`IncludeObject::None`]). `now` is the clock AGE columns are measured
/// against (a parameter so output is reproducible). Resources without a printer of their
/// own get Name and Age, as Kubernetes's default printer.
pub fn to_table(
    group: &str,
    plural: &str,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
    now: jiff::Timestamp,
) -> Value {
    let printer = Printer::of(group, plural);
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let row = printer.row(item, now);
            let mut out = Map::new();
            out.insert("cells".into(), Value::Array(row.cells));
            if let Some(conditions) = row.conditions {
                out.insert("conditions".into(), conditions);
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    let metadata = match item.get("metadata") {
                        Some(m @ Value::Object(_)) => m.clone(),
                        _ => json!({}),
                    };
                    out.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": metadata,
                        }),
                    );
                }
                IncludeObject::Object => {
                    out.insert("object".into(), item.clone());
                }
            }
            Value::Object(out)
        })
        .collect();
    let metadata = match list_meta {
        Value::Object(m) => Value::Object(m),
        _ => json!({}),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(group, plural),
        "rows": rows,
    })
}

/// A duration as Kubernetes prints ages (`duration.HumanDuration`): about two or three
/// significant figures, finer for recent times.
///
/// Seconds below 2 minutes (`5s`, `119s`); minutes and seconds below 10 minutes (`2m3s`,
/// `5m`); minutes below 3 hours (`10m`, `179m`); hours and minutes below 8 hours
/// (`3h4m`, `5h`); hours below 2 days (`47h`); days and hours below 8 days (`2d3h`,
/// `7d`); days below 2 years (`45d`); years and days below 8 years (`3y40d`); then years
/// (`9y`). Sub-second parts are dropped.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

// --- helpers shared by the printers ------------------------------------------------------

/// The value at `path` (object keys only), if every step is an object holding the key.
fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(v, |v, key| v.as_object().and_then(|m| m.get(*key)))
}

/// The object at `path`, if present and an object (a `nil` check on a Go pointer field).
fn obj_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    at(v, path).filter(|v| v.is_object())
}

/// The string at `path`, `""` when missing or not a string.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`, if present and integral.
fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(Value::as_i64)
}

/// The list at `path`, empty when missing or not a list.
fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The number of keys of the map at `path`, 0 when missing or not a map.
fn map_len(v: &Value, path: &[&str]) -> usize {
    at(v, path).and_then(Value::as_object).map_or(0, Map::len)
}

/// An RFC 3339 timestamp at `path`, if present and well-formed.
fn time_at(v: &Value, path: &[&str]) -> Option<jiff::Timestamp> {
    at(v, path)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// How long ago `t` was, as the printers' `translateTimestampSince`: `<unknown>` without a
/// time, `<invalid>` for times more than a second in the future (clock skew below two
/// seconds prints `0s`).
fn since(now: jiff::Timestamp, t: Option<jiff::Timestamp>) -> String {
    let Some(t) = t else {
        return "<unknown>".to_string();
    };
    let d = now.duration_since(t);
    if d.is_negative() {
        if d.as_secs() < -1 {
            "<invalid>".to_string()
        } else {
            "0s".to_string()
        }
    } else {
        human_duration(d.unsigned_abs())
    }
}

/// The AGE cell of an object: time since `metadata.creationTimestamp`.
fn age(obj: &Value, now: jiff::Timestamp) -> String {
    since(now, time_at(obj, &["metadata", "creationTimestamp"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn human_duration_follows_kubernetes() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (123, "2m3s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (10 * 60 + 59, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 4 * 60, "3h4m"),
            (7 * 3600 + 59 * 60 + 59, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (45 * 86400, "45d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            ((3 * 365 + 40) * 86400, "3y40d"),
            ((8 * 365) * 86400, "8y"),
            ((9 * 365 + 100) * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(*secs)), *want, "{secs}s");
        }
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
        assert_eq!(
            human_duration(Duration::MAX),
            format!("{}y", u64::MAX / 86400 / 365)
        );
    }

    #[test]
    fn since_handles_skew_and_missing_times() {
        let now = ts("2024-05-01T12:00:00Z");
        assert_eq!(since(now, None), "<unknown>");
        assert_eq!(since(now, Some(ts("2024-05-01T11:59:55Z"))), "5s");
        assert_eq!(since(now, Some(ts("2024-05-01T12:00:01.500Z"))), "0s");
        assert_eq!(since(now, Some(ts("2024-05-01T12:00:02Z"))), "<invalid>");
        assert_eq!(since(now, Some(ts("2024-04-29T09:00:00Z"))), "2d3h");
        let obj = json!({"metadata": {"creationTimestamp": "not a time"}});
        assert_eq!(age(&obj, now), "<unknown>");
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(IncludeObject::parse(None).unwrap(), IncludeObject::Metadata);
        assert_eq!(
            IncludeObject::parse(Some("")).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::parse(Some("Metadata")).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::parse(Some("None")).unwrap(),
            IncludeObject::None
        );
        assert_eq!(
            IncludeObject::parse(Some("Object")).unwrap(),
            IncludeObject::Object
        );
        let e = IncludeObject::parse(Some("object")).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.reason, "BadRequest");
        assert_eq!(e.message, "unrecognized includeObject value: \"object\"");
    }

    #[test]
    fn table_envelope_and_row_objects() {
        let now = ts("2024-05-01T12:00:00Z");
        let cm = json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"a": "b"},
                         "creationTimestamp": "2024-05-01T11:00:00Z", "resourceVersion": "7"},
            "data": {"x": "1", "y": "2"},
            "binaryData": {"z": "AA=="}
        });
        let items = vec![cm.clone()];
        let meta = json!({"resourceVersion": "42", "continue": "tok"});
        let t = to_table(
            "",
            "configmaps",
            &items,
            meta.clone(),
            IncludeObject::Metadata,
            now,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], meta);
        let cols = t["columnDefinitions"].as_array().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[0]["priority"], 0);
        assert_eq!(cols[1]["format"], "");
        assert!(cols[2]["description"]
            .as_str()
            .unwrap()
            .starts_with("CreationTimestamp"));
        let row = &t["rows"][0];
        assert_eq!(row["cells"], json!(["cfg", 3, "60m"]));
        assert_eq!(
            row["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": cm["metadata"]})
        );
        assert!(row.get("conditions").is_none());

        let t = to_table(
            "",
            "configmaps",
            &items,
            Value::Null,
            IncludeObject::Object,
            now,
        );
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["rows"][0]["object"], cm);
        let t = to_table(
            "",
            "configmaps",
            &items,
            json!({}),
            IncludeObject::None,
            now,
        );
        assert!(t["rows"][0].get("object").is_none());
        let t = to_table("", "configmaps", &[], json!({}), IncludeObject::None, now);
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
        // An item without metadata still gets a PartialObjectMetadata.
        let t = to_table(
            "",
            "configmaps",
            &[json!(5)],
            json!({}),
            IncludeObject::Metadata,
            now,
        );
        assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));
        assert_eq!(t["rows"][0]["cells"], json!(["", 0, "<unknown>"]));
    }

    #[test]
    fn default_printer_for_other_resources() {
        let now = ts("2024-05-01T12:00:00Z");
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:59:00Z"}});
        let t = to_table(
            "example.com",
            "widgets",
            &[obj],
            json!({}),
            IncludeObject::None,
            now,
        );
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][1]["name"], "Age");
        assert_eq!(
            t["columnDefinitions"][1]["description"],
            columns::DEFAULT[1].desc
        );
        assert_eq!(t["rows"][0]["cells"], json!(["x", "60s"]));
        // Events of another group are not core events.
        assert_eq!(column_definitions("events.k8s.io", "events").len(), 2);
    }

    /// Every printer yields exactly one cell per column, whatever the object looks like.
    #[test]
    fn every_printer_fills_every_column_for_any_input() {
        let now = ts("2024-05-01T12:00:00Z");
        let resources = [
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("", "nodes"),
            ("", "services"),
            ("", "endpoints"),
            ("discovery.k8s.io", "endpointslices"),
            ("", "events"),
            ("", "namespaces"),
            ("", "configmaps"),
            ("", "secrets"),
            ("coordination.k8s.io", "leases"),
            ("x", "y"),
        ];
        let shapes = [
            json!(null),
            json!(true),
            json!("pod"),
            json!([1, 2]),
            json!({}),
            json!({"metadata": [], "spec": "x", "status": 3}),
            json!({"metadata": {"name": 3, "creationTimestamp": 5, "deletionTimestamp": "x"},
                   "spec": {"containers": "x", "replicas": "3", "ports": [1, {"port": "x"}],
                            "selector": ["a"], "type": 7, "initContainers": [null, 1]},
                   "status": {"containerStatuses": [null, {"state": [], "lastState": {"terminated": 1}}],
                              "initContainerStatuses": [{"state": {"terminated": {"exitCode": "x"}}}],
                              "conditions": [null, "x"], "addresses": {"a": 1},
                              "loadBalancer": {"ingress": [1]}},
                   "subsets": [null, {"addresses": [1], "ports": [null]}],
                   "endpoints": [{"addresses": [1, "10.0.0.1"]}], "ports": [{"port": -1}],
                   "involvedObject": "x", "series": {"count": "x"}, "source": 1,
                   "data": "x", "binaryData": [1]}),
        ];
        for (g, p) in resources {
            let ncols = column_definitions(g, p).len();
            for shape in &shapes {
                let t = to_table(
                    g,
                    p,
                    std::slice::from_ref(shape),
                    json!({}),
                    IncludeObject::Object,
                    now,
                );
                let cells = t["rows"][0]["cells"].as_array().unwrap();
                assert_eq!(cells.len(), ncols, "{g}/{p} {shape}");
            }
        }
    }
}
