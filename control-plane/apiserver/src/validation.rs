//! Defaulting and validation per resource, as the Kubernetes API server does them, so that
//! kubectl users find the objects (`-o yaml`) and the 422 messages they know.
//!
//! Objects arrive as `serde_json::Value` in Kubernetes JSON form, already shaped by the
//! `k8s-openapi` types. Everything here reads them through tolerant accessors (a field of
//! an unexpected JSON type reads as absent), so no input can make defaulting or validation
//! panic.
//!
//! The three entry points:
//! - [`apply_defaults`]: the defaulters of `pkg/apis/*/v1/defaults.go`, plus the defaults
//!   the admission plugins and registry strategies add that users see on every object
//!   (Pod service account, priority, not-ready/unreachable tolerations and initial status,
//!   Namespace phase and finalizer, Service IP families).
//! - [`validate`]: create and update validation (`ValidateX` / `ValidateXUpdate`), metadata
//!   included, every cause in Kubernetes's words.
//! - [`validate_status`]: what the status subresource accepts.
//!
//! Submodules hold the rules by kind: [`names`] (string formats), `meta` (object metadata
//! and selectors), `pod`, `apps`, `service`, `core` (the smaller kinds), [`quantity`].

use serde_json::Value;

use crate::error::FieldCause;

mod apps;
mod core;
mod meta;
pub mod names;
mod pod;
pub mod quantity;
mod service;
mod util;

use names::NameRule;

pub use pod::qos_class;

/// Fills the defaults Kubernetes's defaulters set (the ones kubectl users see in `-o yaml`),
/// for the resource's (group, kind). Idempotent. Called on create and on every update/patch
/// result.
///
/// Pods also get what the ServiceAccount, Priority and DefaultTolerationSeconds admission
/// plugins add (`serviceAccountName: default`, `priority: 0`,
/// `preemptionPolicy: PreemptLowerPriority`, the two 300 s NoExecute tolerations) and, while
/// they have none, the status the registry gives a new pod (`phase: Pending`, `qosClass`).
/// Pod templates get only the pod-spec defaulters. Kinds without defaults are left as they
/// are; a non-object `obj` is left untouched.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (group, kind) {
        ("", "Pod") => pod::default_pod(obj),
        ("", "Service") => service::default_service(obj),
        ("", "Endpoints") => service::default_endpoints(obj),
        ("", "Namespace") => core::default_namespace(obj),
        ("", "Node") => core::default_node(obj),
        ("", "Secret") => core::default_secret(obj),
        ("apps", "Deployment") => apps::default_deployment(obj),
        ("apps", "ReplicaSet") => apps::default_replica_set(obj),
        ("discovery.k8s.io", "EndpointSlice") => service::default_endpoint_slice(obj),
        _ => {}
    }
}

/// Carries over from the stored object what an update may omit because the server, not the
/// user, owns it — as the Kubernetes registry strategies do before validating an update.
/// Call it on the new object of every update (PUT or patch result), before
/// [`apply_defaults`] and [`validate`].
///
/// - Service: an omitted `clusterIP`/`clusterIPs` (while the service keeps needing one),
///   omitted `nodePort`s (matched by port name) and `healthCheckNodePort` keep their
///   allocated values, so `kubectl replace` of a manifest without them works.
/// - Namespace: `spec.finalizers` only change through the `finalize` subresource, so an
///   update keeps the stored list.
pub fn prepare_update(group: &str, kind: &str, obj: &mut Value, old: &Value) {
    if !obj.is_object() {
        return;
    }
    match (group, kind) {
        ("", "Service") => service::carry_over_allocations(obj, old),
        ("", "Namespace") => core::keep_namespace_finalizers(obj, old),
        _ => {}
    }
}

/// How `metadata.name` is checked for a kind, and whether the kind is namespaced.
fn meta_rules(group: &str, kind: &str) -> (NameRule, bool) {
    let rule = match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        // Kubernetes 1.32 names Services with DNS-1035 labels (a letter first).
        ("", "Service") => NameRule::Dns1035,
        // Kubernetes does not check the names of core/v1 Events.
        ("", "Event") => NameRule::Any,
        _ => NameRule::Subdomain,
    };
    let namespaced = crate::resources::by_kind(group, kind).is_none_or(|r| r.namespaced);
    (rule, namespaced)
}

/// Validates an object for create (`old == None`) or update (`old == Some(previous stored
/// object)`). Returns every cause found (empty = valid). Includes metadata validation (name
/// rules per resource: DNS-1123 subdomain for most, DNS-1123 label for namespaces, DNS-1035
/// label for services as in Kubernetes 1.32; generateName; labels and annotations keys and
/// values; namespace present iff namespaced — the caller already sets
/// metadata.namespace), and immutable fields on update (Pod spec except images,
/// activeDeadlineSeconds and toleration additions; Deployment/ReplicaSet spec.selector;
/// Service cluster IP once set; Secret type; Secret/ConfigMap data once `immutable`;
/// EndpointSlice addressType; Node podCIDRs and providerID once set).
///
/// Both objects are expected to have been through [`apply_defaults`]: defaulted fields
/// (restartPolicy, protocols, …) are reported as missing otherwise, as Kubernetes would.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut errs = Vec::new();
    let (rule, namespaced) = meta_rules(group, kind);
    match old {
        None => meta::validate_object_meta(obj, namespaced, rule, &mut errs),
        Some(old) => {
            meta::validate_object_meta_update(obj, old, &mut errs);
            // Names were checked on create; a namespaced object keeps its namespace.
        }
    }
    match (group, kind) {
        ("", "Pod") => {
            if let Some(old) = old {
                pod::validate_pod_update(obj, old, &mut errs);
            }
            let spec = obj.get("spec").unwrap_or(&Value::Null);
            pod::validate_pod_spec(spec, "spec", &mut errs);
        }
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            let deployment = kind == "Deployment";
            apps::validate_workload_spec(obj, deployment, &mut errs);
            if let Some(old) = old {
                apps::validate_workload_update(obj, old, &mut errs);
            }
        }
        ("", "Service") => {
            service::validate_service(obj, &mut errs);
            if let Some(old) = old {
                service::validate_service_update(obj, old, &mut errs);
            }
        }
        ("", "Endpoints") => service::validate_endpoints(obj, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => {
            service::validate_endpoint_slice(obj, old, &mut errs)
        }
        ("", "Namespace") => core::validate_namespace(obj, &mut errs),
        ("", "Node") => {
            core::validate_node(obj, &mut errs);
            if let Some(old) = old {
                core::validate_node_update(obj, old, &mut errs);
            }
        }
        ("", "ConfigMap") => {
            if let Some(old) = old {
                core::validate_immutable_data(obj, old, false, &mut errs);
            }
            core::validate_config_map(obj, &mut errs);
        }
        ("", "Secret") => {
            if let Some(old) = old {
                core::validate_immutable_data(obj, old, true, &mut errs);
            }
            core::validate_secret(obj, &mut errs);
        }
        ("", "Event") => core::validate_event(obj, &mut errs),
        ("coordination.k8s.io", "Lease") => core::validate_lease(obj, &mut errs),
        ("autoscaling", "Scale") => core::validate_scale(obj, &mut errs),
        _ => {}
    }
    errs
}

/// Validation of a status update (status subresource): the metadata update rules (name,
/// namespace, uid unchanged; labels, annotations, finalizers valid) plus the sanity of the
/// status fields: Pod phase and IPs, Deployment/ReplicaSet replica counts, Namespace phase
/// against deletion, Node quantities, Service load-balancer ingress.
pub fn validate_status(group: &str, kind: &str, obj: &Value, old: &Value) -> Vec<FieldCause> {
    let mut errs = Vec::new();
    meta::validate_object_meta_update(obj, old, &mut errs);
    match (group, kind) {
        ("", "Pod") => pod::validate_pod_status(obj, old, &mut errs),
        ("apps", "Deployment") => apps::validate_workload_status(obj, true, &mut errs),
        ("apps", "ReplicaSet") => apps::validate_workload_status(obj, false, &mut errs),
        ("", "Namespace") => core::validate_namespace_status(obj, &mut errs),
        ("", "Node") => {
            core::validate_node(obj, &mut errs);
            core::validate_node_update(obj, old, &mut errs);
        }
        ("", "Service") => service::validate_service_status(obj, &mut errs),
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests;
