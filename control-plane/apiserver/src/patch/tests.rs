//! Patches as kubectl sends them, applied to objects as the server stores them.

use serde_json::{json, Value};

use super::schema::Shape;
use super::*;
use crate::error::ApiError;

fn try_patch(
    t: PatchType,
    group: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(patch).expect("serializable patch");
    apply(t, group, kind, original, &body)
}

fn smp(group: &str, kind: &str, original: &Value, patch: Value) -> Value {
    try_patch(PatchType::StrategicMerge, group, kind, original, &patch)
        .unwrap_or_else(|e| panic!("strategic merge patch failed: {e}"))
}

fn smp_err(group: &str, kind: &str, original: &Value, patch: Value) -> ApiError {
    match try_patch(PatchType::StrategicMerge, group, kind, original, &patch) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn raw_err(t: PatchType, original: &Value, body: &[u8]) -> ApiError {
    match apply(t, "apps", "Deployment", original, body) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "1f0e7a52-5d0c-4f43-9a43-6f1b8f7f3a10",
            "resourceVersion": "42",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"},
            "finalizers": ["example.com/a", "example.com/b"]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.25",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [
                                {"name": "A", "value": "1"},
                                {"name": "B", "value": "2"},
                                {"name": "C", "value": "3"}
                            ],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}]
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]}
                    ],
                    "restartPolicy": "Always",
                    "tolerations": [
                        {"key": "a", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "b", "operator": "Exists", "effect": "NoExecute"}
                    ]
                }
            }
        },
        "status": {
            "replicas": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ]
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.17",
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
            ]
        }
    })
}

fn pod(containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|n| json!({"name": n, "image": format!("{n}:1")}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": containers}
    })
}

// ---------------------------------------------------------------------------------------
// Content types

#[test]
fn content_types_ignore_parameters_and_case() {
    assert_eq!(
        PatchType::from_content_type("application/json-patch+json"),
        Some(PatchType::Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
        Some(PatchType::Merge)
    );
    assert_eq!(
        PatchType::from_content_type(" Application/Strategic-Merge-Patch+JSON ;charset=UTF-8"),
        Some(PatchType::StrategicMerge)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        None
    );
    assert_eq!(PatchType::from_content_type(""), None);
    for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
}

// ---------------------------------------------------------------------------------------
// kubectl apply: three-way strategic merge patches

#[test]
fn apply_changes_image_and_removes_env_var() {
    // `kubectl apply` after the manifest changed the image and dropped env var B.
    let patch = json!({
        "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"
        }},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"$patch": "delete", "name": "B"}],
                "image": "nginx:1.27",
                "name": "app"
            }]
        }}}
    });
    let original = deployment();
    let got = smp("apps", "Deployment", &original, patch);

    let mut want = original.clone();
    want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{\"new\":true}\n");
    let app = &mut want["spec"]["template"]["spec"]["containers"][0];
    app["image"] = json!("nginx:1.27");
    app["env"] = json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]);
    assert_eq!(got, want);
    // The original is left as it was.
    assert_eq!(original, deployment());
}

#[test]
fn apply_inserts_container_between_existing_and_keeps_server_only_one_last() {
    let mut original = deployment();
    // A container the server (an injector) added, unknown to the manifest.
    original["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "proxy", "image": "envoy:1"}));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}, {"name": "logger"}, {"name": "sidecar"}],
        "containers": [{"image": "fluent-bit:3", "name": "logger"}]
    }}}});
    let got = smp("apps", "Deployment", &original, patch);
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["app", "logger", "sidecar", "proxy"]);
    assert_eq!(
        containers[1],
        json!({"name": "logger", "image": "fluent-bit:3"})
    );
    assert_eq!(containers[0]["env"].as_array().unwrap().len(), 3);
}

#[test]
fn apply_removes_container_and_prepends_env_var() {
    // The manifest dropped the sidecar and added env var D before A.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [
            {
                "$setElementOrder/env": [{"name": "D"}, {"name": "A"}, {"name": "B"}, {"name": "C"}],
                "env": [{"name": "D", "value": "4"}],
                "name": "app"
            },
            {"$patch": "delete", "name": "sidecar"}
        ]
    }}}});
    let got = smp("apps", "Deployment", &deployment(), patch);
    let containers = &got["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["app"]);
    assert_eq!(names(&containers[0]["env"]), ["D", "A", "B", "C"]);
    assert_eq!(containers[0]["env"][0], json!({"name": "D", "value": "4"}));
    assert_eq!(containers[0]["image"], "nginx:1.25");
}

#[test]
fn edit_config_map_data() {
    // `kubectl edit cm`: a two-way strategic merge patch of the edited keys.
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        "data": {"old": "1", "keep": "2"}
    });
    let got = smp(
        "",
        "ConfigMap",
        &cm,
        json!({"data": {"old": null, "new": "3"}}),
    );
    assert_eq!(got["data"], json!({"keep": "2", "new": "3"}));
}

#[test]
fn apply_changes_service_port() {
    // The manifest's http port moved from 80 to 8080: kubectl adds the new port and deletes
    // the old one by its merge key.
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 8080}, {"port": 443}],
        "ports": [
            {"name": "http", "port": 8080, "targetPort": 8080},
            {"$patch": "delete", "port": 80}
        ]
    }});
    let got = smp("", "Service", &service(), patch);
    assert_eq!(
        got["spec"]["ports"],
        json!([
            {"name": "http", "port": 8080, "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
    assert_eq!(got["spec"]["clusterIP"], "10.96.0.17");
}

#[test]
fn patch_merges_service_port_by_port_number() {
    // `kubectl patch svc web -p '{"spec":{"type":"NodePort","ports":[{"port":443,"nodePort":30443}]}}'`
    let got = smp(
        "",
        "Service",
        &service(),
        json!({"spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 30443}]}}),
    );
    assert_eq!(got["spec"]["type"], "NodePort");
    assert_eq!(
        got["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443, "nodePort": 30443}
        ])
    );
}

#[test]
fn label_removed_with_null_and_annotation_added() {
    // `kubectl label deploy web tier-` and `kubectl annotate deploy web owner=team-a`.
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"metadata": {"labels": {"tier": null}, "annotations": {"owner": "team-a"}}}),
    );
    assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(got["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(got["metadata"]["annotations"].as_object().unwrap().len(), 2);
    // Removing a label that is not there is not an error.
    let again = smp(
        "apps",
        "Deployment",
        &got,
        json!({"metadata": {"labels": {"tier": null}}}),
    );
    assert_eq!(again, got);
}

#[test]
fn finalizers_merge_as_a_set() {
    let original = deployment();
    // A new finalizer is added and one already present is not duplicated. Without an
    // order, upstream puts the patch's values first, in the patch's order, and the
    // server-only ones after the last patch value they preceded.
    let got = smp(
        "apps",
        "Deployment",
        &original,
        json!({"metadata": {"finalizers": ["example.com/c", "example.com/a"]}}),
    );
    assert_eq!(
        got["metadata"]["finalizers"],
        json!(["example.com/c", "example.com/a", "example.com/b"])
    );
    let got = smp(
        "apps",
        "Deployment",
        &original,
        json!({"metadata": {"finalizers": ["example.com/b", "example.com/c"]}}),
    );
    assert_eq!(
        got["metadata"]["finalizers"],
        json!(["example.com/a", "example.com/b", "example.com/c"])
    );

    // kubectl apply's form: the additions, the deletions and the order of the whole list.
    let got = smp(
        "apps",
        "Deployment",
        &original,
        json!({"metadata": {
            "$setElementOrder/finalizers": ["example.com/b", "example.com/c"],
            "$deleteFromPrimitiveList/finalizers": ["example.com/a"],
            "finalizers": ["example.com/c"]
        }}),
    );
    assert_eq!(
        got["metadata"]["finalizers"],
        json!(["example.com/b", "example.com/c"])
    );

    // Deletion alone, of a present and an absent value.
    let got = smp(
        "apps",
        "Deployment",
        &original,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/b", "nope"]}}),
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["example.com/a"]));
}

#[test]
fn delete_from_primitive_list_of_absent_field_is_a_no_op() {
    let mut original = deployment();
    original["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let got = smp(
        "apps",
        "Deployment",
        &original,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}}),
    );
    assert_eq!(got, original);
}

#[test]
fn retain_keys_clears_rolling_update_when_switching_to_recreate() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(got["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(got["spec"]["replicas"], 2);

    // Without the directive the map merges, as upstream: rollingUpdate stays.
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(got["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
}

#[test]
fn retain_keys_rejects_a_patch_setting_an_unlisted_key() {
    let e = smp_err(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1}
        }}}),
    );
    assert_eq!((e.code, e.reason), (400, "BadRequest"));
    assert!(e.message.contains("retainKeys"), "{}", e.message);
    let e = smp_err(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}),
    );
    assert_eq!(e.code, 400);
}

#[test]
fn retain_keys_on_volume_switches_its_source() {
    // kubectl apply of a volume changed from emptyDir to hostPath (volumes are
    // merge,retainKeys by name).
    let original = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "data", "emptyDir": {"medium": "Memory"}}
            ]
        }
    });
    let got = smp(
        "",
        "Pod",
        &original,
        json!({"spec": {
            "$setElementOrder/volumes": [{"name": "cache"}, {"name": "data"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}]
        }}),
    );
    assert_eq!(
        got["spec"]["volumes"],
        json!([
            {"name": "cache", "emptyDir": {}},
            {"name": "data", "hostPath": {"path": "/srv"}}
        ])
    );
}

#[test]
fn replace_directive_in_list_replaces_the_list() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "alpine:3", "env": [{"name": "X", "value": null}]},
            {"$patch": "replace"}
        ]}}}}),
    );
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "alpine:3", "env": [{"name": "X"}]}])
    );

    // `[{"$patch": "replace"}]` alone empties the list.
    let got = smp(
        "",
        "Pod",
        &pod(&["a", "b"]),
        json!({"spec": {"containers": [{"$patch": "replace"}]}}),
    );
    assert_eq!(got["spec"]["containers"], json!([]));
}

#[test]
fn replace_and_delete_directives_in_maps() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"metadata": {"labels": {"$patch": "replace", "app": "api"}}}),
    );
    assert_eq!(got["metadata"]["labels"], json!({"app": "api"}));

    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}),
    );
    assert_eq!(got["spec"]["strategy"], json!({"type": "RollingUpdate"}));

    // The whole object cannot delete itself through a patch.
    let e = smp_err(
        "apps",
        "Deployment",
        &deployment(),
        json!({"$patch": "delete"}),
    );
    assert_eq!(e.code, 400);
}

#[test]
fn lists_without_patch_strategy_are_replaced() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "c", "operator": "Exists"}],
            "containers": [{"name": "sidecar", "args": ["sleep", "60"]}]
        }}}}),
    );
    let spec = &got["spec"]["template"]["spec"];
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "c", "operator": "Exists"}])
    );
    // `args` is atomic: replaced, not merged, inside a container merged by name.
    assert_eq!(spec["containers"][1]["args"], json!(["sleep", "60"]));
    assert_eq!(spec["containers"][1]["image"], "busybox:1.36");
}

#[test]
fn status_conditions_merge_by_type() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"status": {"conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
            {"type": "ReplicaFailure", "status": "True"}
        ]}}),
    );
    assert_eq!(
        got["status"]["conditions"],
        json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
            {"type": "ReplicaFailure", "status": "True"}
        ])
    );
}

#[test]
fn node_addresses_merge_by_type_and_taints_are_replaced() {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "n1"}
        ]}
    });
    let got = smp(
        "",
        "Node",
        &node,
        json!({
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}
        }),
    );
    assert_eq!(
        got["spec"]["taints"],
        json!([{"key": "b", "effect": "NoExecute"}])
    );
    assert_eq!(
        got["status"]["addresses"],
        json!([
            {"type": "InternalIP", "address": "10.0.0.2"},
            {"type": "Hostname", "address": "n1"}
        ])
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let mut original = pod(&["c"]);
    original["metadata"]["ownerReferences"] = json!([
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs1", "uid": "u1", "controller": true}
    ]);
    let got = smp(
        "",
        "Pod",
        &original,
        json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u2"},
            {"uid": "u1", "blockOwnerDeletion": true}
        ]}}),
    );
    assert_eq!(
        got["metadata"]["ownerReferences"],
        // In the patch's order.
        json!([
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u2"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs1", "uid": "u1", "controller": true, "blockOwnerDeletion": true}
        ])
    );
}

#[test]
fn merge_keys_compare_numbers_by_value() {
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 80.0, "name": "http"}]}
        ]}}}}),
    );
    let ports = &got["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports.as_array().unwrap().len(), 1);
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(ports[0]["protocol"], "TCP");
}

#[test]
fn new_values_are_stored_without_nulls_or_directives() {
    // A new init container and a new map arrive with directives and nulls: none is stored.
    let got = smp(
        "apps",
        "Deployment",
        &deployment(),
        json!({"spec": {"template": {
            "metadata": {"annotations": {"a": "1", "b": null}},
            "spec": {
                "$setElementOrder/initContainers": [{"name": "init"}],
                "initContainers": [{
                    "name": "init",
                    "image": "busybox",
                    "$setElementOrder/env": [{"name": "X"}],
                    "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}],
                    "resources": {"limits": null}
                }],
                "nodeSelector": {"$patch": "replace", "disk": "ssd"}
            }
        }}}),
    );
    let spec = &got["spec"]["template"]["spec"];
    assert_eq!(
        spec["initContainers"],
        json!([{"name": "init", "image": "busybox", "env": [{"name": "X", "value": "1"}], "resources": {}}])
    );
    assert_eq!(spec["nodeSelector"], json!({"disk": "ssd"}));
    assert_eq!(
        got["spec"]["template"]["metadata"]["annotations"],
        json!({"a": "1"})
    );
}

#[test]
fn patch_order_is_kept_with_server_only_elements_interleaved() {
    // Upstream's "preserve the order from the patch in a merging list 2".
    let got = smp(
        "",
        "Pod",
        &pod(&["c1", "c2", "c3"]),
        json!({"spec": {"containers": [
            {"name": "c3", "image": "x"},
            {"name": "c1", "image": "y"}
        ]}}),
    );
    assert_eq!(names(&got["spec"]["containers"]), ["c2", "c3", "c1"]);
    assert_eq!(got["spec"]["containers"][1]["image"], "x");
}

#[test]
fn set_element_order_places_server_only_elements_after_their_predecessors() {
    // Upstream's "set elements order in a list with server-only items 3".
    let got = smp(
        "",
        "Pod",
        &pod(&["c1", "c2", "c7", "c9", "c8", "c3", "c4"]),
        json!({"spec": {"$setElementOrder/containers": [
            {"name": "c2"}, {"name": "c1"}, {"name": "c4"}, {"name": "c3"}
        ]}}),
    );
    assert_eq!(
        names(&got["spec"]["containers"]),
        ["c2", "c1", "c7", "c9", "c8", "c4", "c3"]
    );
}

#[test]
fn set_element_order_must_agree_with_patch_list() {
    let e = smp_err(
        "",
        "Pod",
        &pod(&["c1", "c2", "c3"]),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}, {"name": "c3"}],
            "containers": [{"name": "c3", "image": "x"}, {"name": "c1", "image": "y"}]
        }}),
    );
    assert_eq!(e.code, 400);
    assert!(e.message.contains("doesn't match"), "{}", e.message);
}

#[test]
fn scale_subresource_patch() {
    let scale = json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "42"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "selector": "app=web"}
    });
    let got = smp(
        "autoscaling",
        "Scale",
        &scale,
        json!({"spec": {"replicas": 5}}),
    );
    assert_eq!(got["spec"], json!({"replicas": 5}));
    // `kubectl scale` sends a merge patch.
    let got = try_patch(
        PatchType::Merge,
        "autoscaling",
        "Scale",
        &scale,
        &json!({"spec": {"replicas": 0}}),
    )
    .unwrap();
    assert_eq!(got["spec"]["replicas"], 0);
    assert_eq!(got["status"]["selector"], "app=web");
}

// ---------------------------------------------------------------------------------------
// Strategic merge patch errors

#[test]
fn strategic_merge_rejects_bad_bodies() {
    let d = deployment();
    for body in [&b"{not json"[..], b"", b"[1,2]", b"\"x\"", b"null"] {
        let e = raw_err(PatchType::StrategicMerge, &d, body);
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{body:?}: {e}");
    }
}

#[test]
fn strategic_merge_rejects_malformed_directives() {
    let d = deployment();
    let cases = [
        json!({"metadata": {"labels": {"$patch": "explode"}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": ["app"]}}}}),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "app"}}}}}),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"image": "x"}]}}}}),
        json!({"spec": {"template": {"spec": {"$setElementOrder": []}}}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "example.com/a"}}),
        json!({"metadata": {"$deleteFromPrimitiveList": ["x"]}}),
        json!({"metadata": {"finalizers": [{"name": "x"}]}}),
    ];
    for patch in cases {
        let e = smp_err("apps", "Deployment", &d, patch.clone());
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{patch}: {e}");
    }
    let e = smp_err(
        "apps",
        "Deployment",
        &d,
        json!({"metadata": {"finalizers": [["x"]]}}),
    );
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert_eq!(e.message, "lists of lists are not supported");
}

#[test]
fn strategic_merge_needs_a_known_kind() {
    let e = smp_err("example.com", "Widget", &json!({}), json!({"spec": {}}));
    assert_eq!((e.code, e.reason), (415, "UnsupportedMediaType"));
    assert!(e.message.contains("Widget.example.com"), "{}", e.message);
    assert!(!supports_strategic_merge("example.com", "Widget"));
    // JSON and merge patches need no schema.
    let got = try_patch(
        PatchType::Merge,
        "example.com",
        "Widget",
        &json!({"a": 1}),
        &json!({"b": 2}),
    )
    .unwrap();
    assert_eq!(got, json!({"a": 1, "b": 2}));
}

// ---------------------------------------------------------------------------------------
// JSON merge patch (RFC 7386)

#[test]
fn merge_patch_merges_maps_and_replaces_lists() {
    let got = try_patch(
        PatchType::Merge,
        "apps",
        "Deployment",
        &deployment(),
        &json!({
            "metadata": {"labels": {"tier": null, "team": "a"}},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}
            }
        }),
    )
    .unwrap();
    assert_eq!(
        got["metadata"]["labels"],
        json!({"app": "web", "team": "a"})
    );
    assert_eq!(got["spec"]["replicas"], 3);
    // A merge patch has no merge keys: the list is replaced wholesale.
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "nginx:1.27"}])
    );
    assert_eq!(got["spec"]["strategy"], deployment()["spec"]["strategy"]);
}

#[test]
fn merge_patch_rejects_bad_bodies() {
    let d = deployment();
    for body in [&b"{"[..], b"", b"[{\"op\":\"add\"}]", b"42"] {
        let e = raw_err(PatchType::Merge, &d, body);
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{body:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// JSON patch (RFC 6902)

#[test]
fn json_patch_applies_operations_in_order() {
    let got = try_patch(
        PatchType::Json,
        "apps",
        "Deployment",
        &deployment(),
        &json!([
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/labels/team", "value": "a"},
            {"op": "remove", "path": "/metadata/labels/tier"},
            {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "x", "image": "y"}},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/annotations/app"},
            {"op": "move", "from": "/spec/template/spec/tolerations/1", "path": "/spec/template/spec/tolerations/0"}
        ]),
    )
    .unwrap();
    assert_eq!(got["spec"]["replicas"], 4);
    assert_eq!(
        got["metadata"]["labels"],
        json!({"app": "web", "team": "a"})
    );
    assert_eq!(
        names(&got["spec"]["template"]["spec"]["containers"]),
        ["app", "sidecar", "x"]
    );
    assert_eq!(got["metadata"]["annotations"]["app"], "web");
    assert_eq!(
        got["spec"]["template"]["spec"]["tolerations"][0]["key"],
        "b"
    );
}

#[test]
fn json_patch_failed_test_is_invalid() {
    let d = deployment();
    let e = try_patch(
        PatchType::Json,
        "apps",
        "Deployment",
        &d,
        &json!([
            {"op": "replace", "path": "/spec/replicas", "value": 9},
            {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
        ]),
    )
    .unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert!(e.message.contains("test operation 1"), "{}", e.message);
    assert!(
        e.message.contains("/metadata/resourceVersion"),
        "{}",
        e.message
    );

    let e = try_patch(
        PatchType::Json,
        "apps",
        "Deployment",
        &d,
        &json!([{"op": "remove", "path": "/spec/paused"}]),
    )
    .unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert!(e.message.contains("does not exist"), "{}", e.message);
}

#[test]
fn json_patch_rejects_bad_bodies() {
    let d = deployment();
    let bodies: [&[u8]; 6] = [
        b"[{",
        b"{\"op\":\"add\",\"path\":\"/a\",\"value\":1}",
        b"[{\"op\":\"explode\",\"path\":\"/a\"}]",
        b"[{\"op\":\"add\",\"path\":\"no-slash\",\"value\":1}]",
        b"[{\"op\":\"add\",\"path\":\"/a\"}]",
        b"",
    ];
    for body in bodies {
        let e = raw_err(PatchType::Json, &d, body);
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{body:?}: {e}");
    }
}

#[test]
fn json_patch_operation_count_is_capped() {
    let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "Deployment"}))
        .collect();
    let e = try_patch(
        PatchType::Json,
        "apps",
        "Deployment",
        &deployment(),
        &Value::Array(ops),
    )
    .unwrap_err();
    assert_eq!((e.code, e.reason), (413, "RequestEntityTooLarge"));
}

// ---------------------------------------------------------------------------------------
// The schema and the patch metadata table

#[test]
fn every_served_kind_has_a_strategic_merge_schema() {
    for r in crate::resources::RESOURCES {
        assert!(
            supports_strategic_merge(r.group, r.kind),
            "{}/{} has no strategic merge schema",
            r.group,
            r.kind
        );
    }
    assert_eq!(
        root_definition("autoscaling", "Scale"),
        Some("io.k8s.api.autoscaling.v1.Scale")
    );
    assert_eq!(root_definition("", "Deployment"), None);
}

#[test]
fn navigation_reaches_nested_definitions() {
    let deployment = Shape::root("apps", "Deployment").unwrap();
    assert_eq!(
        deployment.definition(),
        Some("io.k8s.api.apps.v1.Deployment")
    );
    let pod_spec = deployment.field("spec").field("template").field("spec");
    assert_eq!(pod_spec.definition(), Some("io.k8s.api.core.v1.PodSpec"));
    assert_eq!(
        pod_spec.field("containers").items().definition(),
        Some("io.k8s.api.core.v1.Container")
    );
    assert_eq!(
        pod_spec.field("ephemeralContainers").items().definition(),
        Some("io.k8s.api.core.v1.EphemeralContainer")
    );
    assert_eq!(
        deployment.field("metadata").definition(),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    );
    // Maps of strings, unknown fields, scalars: no definition, no panic.
    assert_eq!(
        deployment
            .field("metadata")
            .field("labels")
            .field("x")
            .definition(),
        None
    );
    assert_eq!(
        deployment
            .field("nope")
            .field("deeper")
            .items()
            .definition(),
        None
    );
}

#[test]
fn patch_meta_lookups() {
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.PodSpec", "containers"),
        Some(FieldPatchMeta {
            strategy: "merge",
            merge_key: Some("name")
        })
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.PodSpec", "volumes"),
        Some(FieldPatchMeta {
            strategy: "merge,retainKeys",
            merge_key: Some("name")
        })
    );
    assert_eq!(
        field_patch_meta(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers"
        ),
        Some(FieldPatchMeta {
            strategy: "merge",
            merge_key: None
        })
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
        Some(FieldPatchMeta {
            strategy: "retainKeys",
            merge_key: None
        })
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports").and_then(|m| m.merge_key),
        Some("port")
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.PodSpec", "tolerations"),
        None
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.NodeSpec", "taints"),
        None
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.PodStatus", "containerStatuses"),
        None
    );
    assert_eq!(
        field_patch_meta("io.k8s.api.core.v1.EndpointSubset", "addresses"),
        None
    );
}

/// Every row of the table names a real field of a real k8s-openapi definition, of the
/// shape its strategy implies, and no (definition, field) appears twice.
#[test]
fn patch_meta_table_matches_the_openapi_types() {
    use k8s_openapi::api::{apps, core};
    use schemars::generate::SchemaSettings;

    let mut generator = SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<core::v1::Pod>();
    generator.subschema_for::<core::v1::Node>();
    generator.subschema_for::<core::v1::Service>();
    generator.subschema_for::<core::v1::Namespace>();
    generator.subschema_for::<core::v1::PersistentVolumeClaim>();
    generator.subschema_for::<core::v1::ReplicationController>();
    generator.subschema_for::<core::v1::ServiceAccount>();
    generator.subschema_for::<core::v1::ComponentStatus>();
    generator.subschema_for::<apps::v1::Deployment>();
    generator.subschema_for::<apps::v1::ReplicaSet>();
    generator.subschema_for::<apps::v1::StatefulSet>();
    generator.subschema_for::<apps::v1::DaemonSet>();
    let definitions = generator.take_definitions(false);
    let resolve = |schema: &Value| -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => definitions[r.rsplit('/').next().unwrap()].clone(),
            None => schema.clone(),
        }
    };

    let mut seen = std::collections::HashSet::new();
    for row in FIELD_PATCH_META {
        assert!(
            seen.insert((row.definition, row.field)),
            "duplicate row {row:?}"
        );
        let definition = definitions
            .get(row.definition)
            .unwrap_or_else(|| panic!("no definition {}", row.definition));
        let field = definition["properties"]
            .get(row.field)
            .unwrap_or_else(|| panic!("{} has no field {}", row.definition, row.field));
        assert_eq!(
            field_patch_meta(row.definition, row.field),
            Some(row.meta),
            "{row:?}"
        );
        if row.meta.merges_lists() {
            assert_eq!(field["type"], "array", "{row:?}");
            let items = resolve(&field["items"]);
            match row.meta.merge_key {
                Some(key) => assert!(
                    items["properties"].get(key).is_some(),
                    "{row:?}: elements have no {key}"
                ),
                None => assert_ne!(items["type"], "object", "{row:?}"),
            }
        } else {
            assert!(row.meta.retains_keys(), "{row:?}");
            assert_eq!(resolve(field)["type"], "object", "{row:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Robustness

/// A tiny deterministic generator (xorshift), so the test needs no extra crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random patch fragment built from real field names, directives and odd values.
    fn value(&mut self, depth: usize) -> Value {
        const KEYS: &[&str] = &[
            "metadata",
            "spec",
            "status",
            "template",
            "containers",
            "initContainers",
            "name",
            "env",
            "ports",
            "port",
            "containerPort",
            "finalizers",
            "labels",
            "strategy",
            "rollingUpdate",
            "type",
            "volumes",
            "conditions",
            "image",
            "replicas",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/env",
            "$setElementOrder/finalizers",
            "$setElementOrder/ports",
            "$setElementOrder",
            "$deleteFromPrimitiveList/finalizers",
            "$deleteFromPrimitiveList",
        ];
        let choice = if depth == 0 {
            self.below(5)
        } else {
            self.below(8)
        };
        match choice {
            0 => Value::Null,
            1 => json!(["delete", "replace", "merge", "app", "sidecar", "x"][self.below(6)]),
            2 => json!([80, 443, 8080, -1][self.below(4)]),
            3 => json!(80.0),
            4 => json!(self.below(2) == 0),
            5 | 6 => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.below(4) {
                    let key = KEYS[self.below(KEYS.len())].to_string();
                    map.insert(key, self.value(depth - 1));
                }
                Value::Object(map)
            }
            _ => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
        }
    }
}

#[test]
fn random_patches_never_panic() {
    let targets = [
        ("apps", "Deployment", deployment()),
        ("", "Service", service()),
        ("", "Pod", pod(&["app", "sidecar"])),
    ];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut applied = 0;
    for i in 0..3000 {
        let patch = g.value(6);
        let (group, kind, original) = &targets[i % targets.len()];
        for t in [PatchType::StrategicMerge, PatchType::Merge, PatchType::Json] {
            match try_patch(t, group, kind, original, &patch) {
                Ok(result) => {
                    if t == PatchType::StrategicMerge {
                        applied += 1;
                        assert!(
                            !has_directive(&result),
                            "{patch} left a directive: {result}"
                        );
                    }
                }
                Err(e) => assert!(matches!(e.code, 400 | 422), "{t:?} {patch}: unexpected {e}"),
            }
        }
    }
    // The generator must exercise successful merges too, not only rejections.
    assert!(
        applied > 300,
        "only {applied} strategic merge patches applied"
    );
}

fn has_directive(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(items) => items.iter().any(has_directive),
        _ => false,
    }
}
