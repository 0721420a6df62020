//! `apps/v1` Deployments and ReplicaSets: defaults (`pkg/apis/apps/v1/defaults.go`) and
//! validation (`pkg/apis/apps/validation`).

use serde_json::{json, Value};

use super::meta::{
    selector_is_empty, selector_matches, validate_annotations_at, validate_label_selector,
    validate_labels,
};
use super::names::is_percent;
use super::pod::{default_template, validate_pod_spec};
use super::util::{
    child, default_missing, default_zero, go_string_map, int, invalid_rendered, nonnegative,
    present, se, string_map, Causes, IMMUTABLE, IS_NEGATIVE,
};
use crate::error::FieldCause;

/// Deployment defaults: replicas 1, RollingUpdate with 25%/25%, revisionHistoryLimit 10,
/// progressDeadlineSeconds 600, and the pod-template defaults.
pub fn default_deployment(d: &mut Value) {
    let Some(spec) = child(d, "spec") else {
        return;
    };
    default_missing(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        default_zero(strategy, "type", json!("RollingUpdate"));
        if se(strategy, "type") == "RollingUpdate" {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                default_missing(ru, "maxUnavailable", json!("25%"));
                default_missing(ru, "maxSurge", json!("25%"));
            }
        }
    }
    default_missing(spec, "revisionHistoryLimit", json!(10));
    default_missing(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

/// ReplicaSet defaults: replicas 1 and the pod-template defaults.
pub fn default_replica_set(rs: &mut Value) {
    let Some(spec) = child(rs, "spec") else {
        return;
    };
    default_missing(spec, "replicas", json!(1));
    default_template(spec);
}

/// Validates the spec of a Deployment (`deployment == true`) or ReplicaSet.
pub fn validate_workload_spec(obj: &Value, deployment: bool, errs: &mut Causes) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    nonnegative(errs, spec, "replicas", "spec");
    nonnegative(errs, spec, "minReadySeconds", "spec");
    let selector = present(spec, "selector");
    match selector {
        None => errs.push(FieldCause::required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldCause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                ));
            }
        }
    }
    match present(spec, "template") {
        None => errs.push(FieldCause::required("spec.template", "")),
        Some(t) => {
            let tmeta = t.get("metadata").unwrap_or(&null);
            if let Some(sel) = selector.filter(|s| !selector_is_empty(s)) {
                if !selector_matches(sel, tmeta, "labels") {
                    errs.push(invalid_rendered(
                        "spec.template.metadata.labels",
                        &go_string_map(&string_map(tmeta, "labels")),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            validate_labels(tmeta, "labels", "spec.template.metadata.labels", errs);
            validate_annotations_at(tmeta, "spec.template.metadata.annotations", errs);
            let tspec = t.get("spec").unwrap_or(&null);
            validate_pod_spec(tspec, "spec.template.spec", errs);
            let rp = se(tspec, "restartPolicy");
            if !rp.is_empty() && rp != "Always" {
                errs.push(FieldCause::not_supported(
                    "spec.template.spec.restartPolicy",
                    &json!(rp),
                    &["Always"],
                ));
            }
            if present(tspec, "activeDeadlineSeconds").is_some() {
                errs.push(FieldCause::forbidden(
                    "spec.template.spec.activeDeadlineSeconds",
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                ));
            }
        }
    }
    if !deployment {
        return;
    }
    validate_strategy(spec, errs);
    if let Some(n) = int(spec, "revisionHistoryLimit") {
        if n < 0 {
            errs.push(FieldCause::invalid(
                "spec.revisionHistoryLimit",
                &json!(n),
                IS_NEGATIVE,
            ));
        }
    }
    if let Some(n) = int(spec, "progressDeadlineSeconds") {
        if n < 0 {
            errs.push(FieldCause::invalid(
                "spec.progressDeadlineSeconds",
                &json!(n),
                IS_NEGATIVE,
            ));
        }
        if n <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(FieldCause::invalid(
                "spec.progressDeadlineSeconds",
                &json!(n),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn validate_strategy(spec: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let strategy = spec.get("strategy").unwrap_or(&null);
    let rolling = present(strategy, "rollingUpdate");
    match se(strategy, "type") {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(FieldCause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match rolling {
            None => errs.push(FieldCause::required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let p = "spec.strategy.rollingUpdate";
                let unavailable = ru.get("maxUnavailable").unwrap_or(&null);
                let surge = ru.get("maxSurge").unwrap_or(&null);
                validate_int_or_percent(unavailable, &format!("{p}.maxUnavailable"), errs);
                validate_int_or_percent(surge, &format!("{p}.maxSurge"), errs);
                if int_or_percent_value(unavailable) == Some(0)
                    && int_or_percent_value(surge) == Some(0)
                {
                    errs.push(FieldCause::invalid(
                        format!("{p}.maxUnavailable"),
                        unavailable,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                if let Value::String(s) = unavailable {
                    if int_or_percent_value(unavailable).is_some_and(|v| v > 100) {
                        errs.push(FieldCause::invalid(
                            format!("{p}.maxUnavailable"),
                            &json!(s),
                            "must not be greater than 100%",
                        ));
                    }
                }
            }
        },
        other => errs.push(FieldCause::not_supported(
            "spec.strategy.type",
            &json!(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// The number in `5` or `"5%"` (`None` when it is neither).
fn int_or_percent_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.strip_suffix('%').and_then(|d| d.parse().ok()),
        _ => None,
    }
}

fn validate_int_or_percent(v: &Value, p: &str, errs: &mut Causes) {
    match v {
        Value::String(s) => {
            for m in is_percent(s) {
                errs.push(FieldCause::invalid(p, v, &m));
            }
        }
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                errs.push(FieldCause::invalid(p, v, IS_NEGATIVE));
            }
        }
        _ => errs.push(FieldCause::invalid(
            p,
            v,
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

/// Update rules shared by Deployments and ReplicaSets: the selector is immutable in
/// `apps/v1`.
pub fn validate_workload_update(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let ns = new
        .get("spec")
        .and_then(|s| s.get("selector"))
        .unwrap_or(&null);
    let os = old
        .get("spec")
        .and_then(|s| s.get("selector"))
        .unwrap_or(&null);
    if ns != os {
        errs.push(FieldCause::invalid("spec.selector", ns, IMMUTABLE));
    }
}

/// Status sanity (`ValidateDeploymentStatus`, `ValidateReplicaSetStatus`): counts are not
/// negative and no count exceeds the one it is part of.
pub fn validate_workload_status(obj: &Value, deployment: bool, errs: &mut Causes) {
    let null = Value::Null;
    let st = obj.get("status").unwrap_or(&null);
    let keys: &[&str] = if deployment {
        &[
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "terminatingReplicas",
            "collisionCount",
        ]
    } else {
        &[
            "observedGeneration",
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "terminatingReplicas",
        ]
    };
    for k in keys {
        nonnegative(errs, st, k, "status");
    }
    let get = |k: &str| int(st, k).unwrap_or(0);
    let replicas = get("replicas");
    let over = |errs: &mut Causes, k: &str, than: i64, msg: &str| {
        if get(k) > than {
            errs.push(FieldCause::invalid(
                format!("status.{k}"),
                &json!(get(k)),
                msg,
            ));
        }
    };
    if deployment {
        over(
            errs,
            "updatedReplicas",
            replicas,
            "cannot be greater than status.replicas",
        );
        over(
            errs,
            "readyReplicas",
            replicas,
            "cannot be greater than status.replicas",
        );
        over(
            errs,
            "availableReplicas",
            replicas,
            "cannot be greater than status.replicas",
        );
    } else {
        let msg = "cannot be greater than the number of replicas";
        over(errs, "fullyLabeledReplicas", replicas, msg);
        over(errs, "readyReplicas", replicas, msg);
        over(errs, "availableReplicas", replicas, msg);
    }
    over(
        errs,
        "availableReplicas",
        get("readyReplicas"),
        "cannot be greater than readyReplicas",
    );
}
