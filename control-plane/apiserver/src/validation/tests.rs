//! Tests of the public entry points: defaults as kubectl shows them, and each major cause
//! with its field path and Kubernetes message.

use serde_json::{json, Value};

use super::*;

fn defaulted(group: &str, kind: &str, mut v: Value) -> Value {
    apply_defaults(group, kind, &mut v);
    let once = v.clone();
    apply_defaults(group, kind, &mut v);
    assert_eq!(v, once, "apply_defaults must be idempotent for {kind}");
    v
}

fn lines(errs: &[FieldCause]) -> Vec<String> {
    errs.iter().map(FieldCause::line).collect()
}

/// The causes of creating `v` (defaulted first), as `field: message` lines.
fn create(group: &str, kind: &str, v: Value) -> Vec<String> {
    let v = defaulted(group, kind, v);
    lines(&validate(group, kind, &v, None))
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

#[track_caller]
fn assert_has(lines: &[String], want: &str) {
    assert!(has(lines, want), "missing {want:?} in {lines:#?}");
}

#[track_caller]
fn assert_prefix(lines: &[String], want: &str) {
    assert!(
        lines.iter().any(|l| l.starts_with(want)),
        "no line starting with {want:?} in {lines:#?}"
    );
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn deployment(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn good_template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}})
}

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

// ----------------------------------------------------------------------------------------
// Defaults
// ----------------------------------------------------------------------------------------

#[test]
fn validation_defaults_pod() {
    let p = defaulted(
        "",
        "Pod",
        pod(json!({"containers": [{
            "name": "web", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            "livenessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}
        }, {"name": "side", "image": "busybox:1.36"}],
        "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}}]})),
    );
    let spec = &p["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always", "no tag means latest");
    assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert!(c["ports"][0].get("hostPort").is_none());
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
               "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"}),
        "requests default from limits, explicit ones kept"
    );
    assert_eq!(spec["containers"][1]["resources"], json!({}));
    assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
    assert_eq!(
        p["status"],
        json!({"phase": "Pending", "qosClass": "Burstable"})
    );
    assert!(
        validate("", "Pod", &p, None).is_empty(),
        "{:#?}",
        validate("", "Pod", &p, None)
    );
}

#[test]
fn validation_defaults_pod_tolerations_and_admission() {
    let p = defaulted(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x"}],
                   "serviceAccountName": "robot", "priorityClassName": "system-node-critical",
                   "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                    "effect": "NoExecute", "tolerationSeconds": 10}]})),
    );
    let t = p["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["tolerationSeconds"], 10);
    assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
    assert_eq!(p["spec"]["serviceAccountName"], "robot");
    assert_eq!(p["spec"]["serviceAccount"], "robot");
    assert_eq!(p["spec"]["priority"], 2_000_001_000);

    // The deprecated `serviceAccount` alone names the account.
    let p = defaulted(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x"}], "serviceAccount": "legacy"})),
    );
    assert_eq!(p["spec"]["serviceAccountName"], "legacy");
    assert_eq!(p["spec"]["serviceAccount"], "legacy");

    // A toleration of every taint covers both.
    let p = defaulted(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x"}],
                   "tolerations": [{"operator": "Exists"}]})),
    );
    assert_eq!(p["spec"]["tolerations"], json!([{"operator": "Exists"}]));

    // Host network: host ports default to container ports (Pods only).
    let p = defaulted(
        "",
        "Pod",
        pod(json!({"hostNetwork": true,
                   "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]})),
    );
    assert_eq!(p["spec"]["containers"][0]["ports"][0]["hostPort"], 53);

    // An existing status is not touched.
    let mut running = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
    running["status"] = json!({"phase": "Running", "qosClass": "BestEffort"});
    let p = defaulted("", "Pod", running);
    assert_eq!(p["status"]["phase"], "Running");
}

#[test]
fn validation_defaults_deployment_and_replicaset() {
    let d = defaulted(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template()}),
        ),
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let tspec = &spec["template"]["spec"];
    assert_eq!(tspec["restartPolicy"], "Always");
    assert_eq!(tspec["dnsPolicy"], "ClusterFirst");
    assert_eq!(tspec["schedulerName"], "default-scheduler");
    assert_eq!(tspec["terminationGracePeriodSeconds"], 30);
    assert_eq!(tspec["containers"][0]["imagePullPolicy"], "IfNotPresent");
    for pod_only in [
        "serviceAccountName",
        "tolerations",
        "enableServiceLinks",
        "priority",
    ] {
        assert!(tspec.get(pod_only).is_none(), "{pod_only} is pod-only");
    }
    assert!(validate("apps", "Deployment", &d, None).is_empty());

    // Recreate gets no rollingUpdate.
    let d = defaulted(
        "apps",
        "Deployment",
        deployment(
            json!({"strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": "web"}},
                          "template": good_template()}),
        ),
    );
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));

    let rs = defaulted(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "r", "namespace": "d"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": good_template()}}),
    );
    assert_eq!(rs["spec"]["replicas"], 1);
    assert!(rs["spec"].get("strategy").is_none());
    assert_eq!(rs["spec"]["template"]["spec"]["restartPolicy"], "Always");
}

#[test]
fn validation_defaults_service() {
    let s = defaulted(
        "",
        "Service",
        service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}, {"name": "m", "port": 9090, "targetPort": "metrics"}]}),
        ),
    );
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["ports"][1]["targetPort"], "metrics");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert!(
        spec.get("clusterIP").is_none(),
        "allocation is the caller's"
    );
    assert!(spec.get("externalTrafficPolicy").is_none());

    let s = defaulted(
        "",
        "Service",
        service(
            json!({"type": "LoadBalancer", "sessionAffinity": "ClientIP", "clusterIP": "fd00::10",
                       "ports": [{"port": 443}]}),
        ),
    );
    let spec = &s["spec"];
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(
        spec["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert_eq!(spec["clusterIPs"], json!(["fd00::10"]));
    assert_eq!(spec["ipFamilies"], json!(["IPv6"]));

    let s = defaulted("", "Service", service(json!({"clusterIP": "None"})));
    assert_eq!(s["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert!(validate("", "Service", &s, None).is_empty());

    let s = defaulted(
        "",
        "Service",
        service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
    );
    for absent in [
        "ipFamilyPolicy",
        "ipFamilies",
        "internalTrafficPolicy",
        "clusterIP",
    ] {
        assert!(s["spec"].get(absent).is_none(), "{absent}");
    }
    assert!(validate("", "Service", &s, None).is_empty());
}

#[test]
fn validation_defaults_namespace_secret_node_endpoints() {
    let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    assert!(validate("", "Namespace", &ns, None).is_empty());

    let deleting = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"},
               "spec": {}, "status": {"phase": "Terminating"}}),
    );
    assert!(deleting["spec"].get("finalizers").is_none());

    let s = defaulted(
        "",
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "d"}, "data": {"a": "eA=="},
               "stringData": {"b": "hello"}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"a": "eA==", "b": "aGVsbG8="}));
    assert!(s.get("stringData").is_none());

    let n = defaulted(
        "",
        "Node",
        json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "4"}}}),
    );
    assert_eq!(n["status"]["allocatable"], json!({"cpu": "4"}));

    let ep = defaulted(
        "",
        "Endpoints",
        json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    let es = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"ports": [{"port": 80}]}),
    );
    assert_eq!(
        es["ports"][0],
        json!({"port": 80, "protocol": "TCP", "name": ""})
    );
}

#[test]
fn validation_odd_shapes_never_panic() {
    let kinds = [
        ("", "Namespace"),
        ("", "Node"),
        ("", "Pod"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Event"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("autoscaling", "Scale"),
        ("x", "Unknown"),
    ];
    let odd = [
        json!(null),
        json!([]),
        json!("pod"),
        json!({}),
        json!({"metadata": 5, "spec": "x", "status": []}),
        json!({"metadata": {"name": 5, "labels": [1], "annotations": "a", "finalizers": {}},
               "spec": {"containers": "x", "volumes": [5, null], "ports": {}, "selector": 3,
                        "template": {"spec": {"containers": [null, 1, {"ports": [7], "env": 3,
                                     "resources": {"limits": 1, "requests": {"cpu": 5}}}]}},
                        "strategy": {"type": 1, "rollingUpdate": 4}, "tolerations": "t",
                        "clusterIPs": [1], "taints": [1], "podCIDRs": [1]},
               "data": [1], "binaryData": {"k": 1}, "subsets": [1, {"ports": [1]}],
               "endpoints": [1], "involvedObject": 1, "stringData": {"a": 1}}),
        json!({"metadata": {"name": "x", "namespace": "d"},
               "spec": {"containers": [{"name": "a", "image": "b", "livenessProbe": 1,
                                        "lifecycle": {"preStop": 2}, "volumeMounts": [1]}],
                        "tolerations": [1, {"key": 2}], "ports": [1, {"port": "x"}],
                        "strategy": {"rollingUpdate": {"maxSurge": [], "maxUnavailable": {}}}}}),
    ];
    for (g, k) in kinds {
        for o in &odd {
            let mut v = o.clone();
            apply_defaults(g, k, &mut v);
            let _ = validate(g, k, &v, None);
            let _ = validate(g, k, &v, Some(o));
            let _ = validate(g, k, o, Some(&v));
            let _ = validate_status(g, k, &v, o);
        }
    }
}

// ----------------------------------------------------------------------------------------
// Metadata
// ----------------------------------------------------------------------------------------

#[test]
fn validation_metadata_rules_per_kind() {
    let l = create("", "Namespace", json!({"metadata": {"name": "team.a"}}));
    assert_eq!(
        l,
        vec!["metadata.name: Invalid value: \"team.a\": must not contain dots"]
    );

    let l = create("", "Namespace", json!({"metadata": {"name": "Team"}}));
    assert_eq!(l, vec!["metadata.name: Invalid value: \"Team\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]);

    let l = create(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
    );
    assert_eq!(l, vec!["metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]);

    let l = create("", "ConfigMap", json!({"metadata": {"name": "ok"}}));
    assert_eq!(l, vec!["metadata.namespace: Required value"]);

    let l = create(
        "",
        "Node",
        json!({"metadata": {"name": "n1", "namespace": "default"}}),
    );
    assert_eq!(
        l,
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );

    let l = create(
        "",
        "Service",
        service(json!({"ports": [{"port": 80}]}))
            .as_object()
            .map(|m| {
                let mut m = m.clone();
                m.insert(
                    "metadata".into(),
                    json!({"name": "1web", "namespace": "default"}),
                );
                Value::Object(m)
            })
            .unwrap(),
    );
    assert_prefix(&l, "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character");

    let l = create(
        "",
        "ConfigMap",
        json!({"metadata": {"generateName": "cfg-", "name": "cfg-x1y2z", "namespace": "default",
                            "labels": {"app": "web/x"}, "annotations": {"bad key": "v"}}}),
    );
    assert_eq!(l.len(), 2, "{l:#?}");
    assert_prefix(&l, "metadata.labels: Invalid value: \"web/x\": a valid label must be an empty string or consist of alphanumeric characters");
    assert_prefix(&l, "metadata.annotations: Invalid value: \"bad key\": name part must consist of alphanumeric characters");
}

// ----------------------------------------------------------------------------------------
// Pods
// ----------------------------------------------------------------------------------------

#[test]
fn validation_pod_containers() {
    let l = create("", "Pod", pod(json!({})));
    assert_eq!(l, vec!["spec.containers: Required value"]);

    let l = create(
        "",
        "Pod",
        pod(json!({"containers": [
            {"name": "Web", "image": "nginx"},
            {"name": "b", "image": ""},
            {"name": "b", "image": "x"},
        ]})),
    );
    assert_prefix(&l, "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of");
    assert_has(&l, "spec.containers[1].image: Required value");
    assert_has(&l, "spec.containers[2].name: Duplicate value: \"b\"");

    let l = create(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x",
            "ports": [{"containerPort": 70000, "name": "http"}, {"containerPort": 81, "name": "http"},
                      {"containerPort": 82, "protocol": "HTTP"}, {"name": "80"}],
            "env": [{"name": "A=B", "value": "1"}, {"name": ""},
                    {"name": "X", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "missing", "mountPath": "/data"}],
            "resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "1", "memory": "lots"}}}],
            "restartPolicy": "Sometimes", "dnsPolicy": "Google"})),
    );
    assert_has(&l, "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
    assert_has(
        &l,
        "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
    );
    assert_has(&l, "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
    assert_has(&l, "spec.containers[0].ports[3].name: Invalid value: \"80\": must contain at least one letter (a-z)");
    assert_has(
        &l,
        "spec.containers[0].ports[3].containerPort: Required value",
    );
    assert_has(&l, "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='");
    assert_has(&l, "spec.containers[0].env[1].name: Required value");
    assert_has(&l, "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty");
    assert_has(
        &l,
        "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
    );
    assert_has(&l, "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m");
    assert_prefix(&l, "spec.containers[0].resources.requests[memory]: Invalid value: \"lots\": quantities must match the regular expression");
    assert_has(&l, "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"");
    assert_has(&l, "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"");
}

#[test]
fn validation_pod_volumes_probes_tolerations() {
    let l = create(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x",
                "volumeMounts": [{"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/d"}],
                "livenessProbe": {"successThreshold": 2, "exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
                "readinessProbe": {}}],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "data", "emptyDir": {}},
                        {"name": "both", "emptyDir": {}, "secret": {"secretName": "s"}},
                        {"name": "Bad_Name", "configMap": {}}],
            "tolerations": [{"operator": "Equal", "value": "x"},
                            {"key": "k", "operator": "Exists", "value": "v"},
                            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]})),
    );
    assert_has(&l, "spec.volumes[1].name: Duplicate value: \"data\"");
    assert_has(
        &l,
        "spec.volumes[2].secret: Forbidden: may not specify more than 1 volume type",
    );
    assert_has(&l, "spec.volumes[3].configMap.name: Required value");
    assert_prefix(
        &l,
        "spec.volumes[3].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label",
    );
    assert_has(
        &l,
        "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
    );
    assert_has(&l, "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type");
    assert_has(
        &l,
        "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
    );
    assert_has(
        &l,
        "spec.containers[0].readinessProbe: Required value: must specify a handler type",
    );
    assert_has(&l, "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"");
    assert_prefix(&l, "spec.tolerations[1].operator: Invalid value: {");
    assert_has(&l, "spec.tolerations[2].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set");
}

#[test]
fn validation_pod_update_rules() {
    let base = defaulted(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a", "image": "nginx:1.24", "ports": [{"containerPort": 80}]}]}),
        ),
    );
    let mut old = base.clone();
    old["metadata"]["uid"] = json!("u1");

    // Image changes, a new toleration and a lower deadline are allowed.
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.25");
    new["spec"]["tolerations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "gpu", "operator": "Exists"}));
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    let new = defaulted("", "Pod", new);
    assert!(
        validate("", "Pod", &new, Some(&old)).is_empty(),
        "{:#?}",
        validate("", "Pod", &new, Some(&old))
    );

    // Anything else is forbidden, with Kubernetes's sentence and a diff.
    let mut changed = old.clone();
    changed["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
    let errs = validate("", "Pod", &changed, Some(&old));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert_eq!(errs[0].reason, "FieldValueForbidden");
    assert!(errs[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
    assert!(errs[0]
        .message
        .contains("spec.containers[0].ports[0].containerPort: 80 -> 8080"));

    let mut removed = old.clone();
    removed["spec"]["tolerations"] = json!([]);
    let removed = defaulted("", "Pod", json!(removed));
    // Defaults put the admission tolerations back: removing a custom one is the real case.
    assert!(validate("", "Pod", &removed, Some(&old)).is_empty());
    let mut with_custom = new.clone();
    with_custom["spec"]["tolerations"]
        .as_array_mut()
        .unwrap()
        .remove(2);
    let l = lines(&validate("", "Pod", &with_custom, Some(&new)));
    assert_has(&l, "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds");

    let mut longer = new.clone();
    longer["spec"]["activeDeadlineSeconds"] = json!(120);
    let l = lines(&validate("", "Pod", &longer, Some(&new)));
    assert_eq!(l, vec!["spec.activeDeadlineSeconds: Invalid value: 120: must be less than or equal to previous value"]);

    let mut more = old.clone();
    more["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "b", "image": "x"}));
    let l = lines(&validate(
        "",
        "Pod",
        &defaulted("", "Pod", more),
        Some(&old),
    ));
    assert_has(
        &l,
        "spec.containers: Forbidden: pod updates may not add or remove containers",
    );

    let mut renamed = old.clone();
    renamed["metadata"]["name"] = json!("other");
    let l = lines(&validate("", "Pod", &renamed, Some(&old)));
    assert_eq!(
        l,
        vec!["metadata.name: Invalid value: \"other\": field is immutable"]
    );
}

#[test]
fn validation_pod_status() {
    let old = defaulted(
        "",
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x"}]})),
    );
    let mut new = old.clone();
    new["status"] =
        json!({"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}]});
    assert!(validate_status("", "Pod", &new, &old).is_empty());
    new["status"]["phase"] = json!("Exploded");
    new["status"]["podIP"] = json!("10.0.0.300");
    let l = lines(&validate_status("", "Pod", &new, &old));
    assert_has(&l, "status.phase: Unsupported value: \"Exploded\": supported values: \"Pending\", \"Running\", \"Succeeded\", \"Failed\", \"Unknown\"");
    assert_has(&l, "status.podIP: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
    let mut done = old.clone();
    done["status"]["phase"] = json!("Succeeded");
    let mut back = done.clone();
    back["status"]["phase"] = json!("Running");
    let l = lines(&validate_status("", "Pod", &back, &done));
    assert_has(
        &l,
        "status.phase: Forbidden: cannot transition from terminal phase Succeeded to Running",
    );
}

// ----------------------------------------------------------------------------------------
// Deployments and ReplicaSets
// ----------------------------------------------------------------------------------------

#[test]
fn validation_deployment() {
    let l = create(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "api"}}, "template": good_template()}),
        ),
    );
    assert_eq!(l, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"]);

    let l = create(
        "apps",
        "Deployment",
        deployment(json!({"template": good_template()})),
    );
    assert_eq!(l, vec!["spec.selector: Required value"]);

    let l = create(
        "apps",
        "Deployment",
        deployment(json!({"selector": {}, "template": good_template()})),
    );
    assert_eq!(
        l,
        vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );

    let mut t = good_template();
    t["spec"]["restartPolicy"] = json!("Never");
    let l = create(
        "apps",
        "Deployment",
        deployment(
            json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": t,
                          "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
        ),
    );
    assert_has(
        &l,
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(&l, "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"");
    assert_has(&l, "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0");

    let l = create(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template(),
                          "strategy": {"type": "BlueGreen"}}),
        ),
    );
    assert_eq!(l, vec!["spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\""]);

    let l = create(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template(),
                          "strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}),
        ),
    );
    assert_eq!(l, vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]);

    let l = create(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template(),
                          "strategy": {"rollingUpdate": {"maxSurge": "x", "maxUnavailable": "150%"}}}),
        ),
    );
    assert_has(&l, "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
    assert_has(&l, "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%");

    // Selector immutable on update; the template may change.
    let old = defaulted(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template()}),
        ),
    );
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    new["spec"]["replicas"] = json!(5);
    assert!(validate("apps", "Deployment", &new, Some(&old)).is_empty());
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    new["spec"]["template"]["metadata"]["labels"]["v"] = json!("2");
    let l = lines(&validate("apps", "Deployment", &new, Some(&old)));
    assert_eq!(l, vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"]);
}

#[test]
fn validation_replicaset_and_scale() {
    let l = create(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "r", "namespace": "d"},
               "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]},
                        "template": good_template()}}),
    );
    assert_eq!(l, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"]);

    let l = lines(&validate(
        "autoscaling",
        "Scale",
        &json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"replicas": -2}}),
        None,
    ));
    assert_eq!(
        l,
        vec!["spec.replicas: Invalid value: -2: must be greater than or equal to 0"]
    );

    let old = defaulted(
        "apps",
        "ReplicaSet",
        json!({"metadata": {"name": "r", "namespace": "d"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": good_template()}}),
    );
    let mut st = old.clone();
    st["status"] = json!({"replicas": 2, "readyReplicas": 3, "availableReplicas": 1});
    let l = lines(&validate_status("apps", "ReplicaSet", &st, &old));
    assert_eq!(
        l,
        vec![
            "status.readyReplicas: Invalid value: 3: cannot be greater than the number of replicas"
        ]
    );
}

#[test]
fn validation_deployment_status() {
    let old = defaulted(
        "apps",
        "Deployment",
        deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": good_template()}),
        ),
    );
    let mut new = old.clone();
    new["status"] =
        json!({"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
    assert!(validate_status("apps", "Deployment", &new, &old).is_empty());
    new["status"] = json!({"replicas": 1, "readyReplicas": 2, "availableReplicas": -1});
    let l = lines(&validate_status("apps", "Deployment", &new, &old));
    assert_has(
        &l,
        "status.availableReplicas: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_has(
        &l,
        "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas",
    );
}

// ----------------------------------------------------------------------------------------
// Services, Endpoints, EndpointSlices
// ----------------------------------------------------------------------------------------

#[test]
fn validation_service() {
    let l = create("", "Service", service(json!({})));
    assert_eq!(l, vec!["spec.ports: Required value"]);

    let l = create(
        "",
        "Service",
        service(json!({"type": "Magic", "selector": {"app": "a b"},
                       "ports": [{"port": 0}, {"name": "dns", "port": 53, "protocol": "ICMP", "targetPort": 0}]})),
    );
    assert_has(&l, "spec.ports[0].name: Required value");
    assert_has(
        &l,
        "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
    );
    assert_has(&l, "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
    assert_has(&l, "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"");
    assert_prefix(
        &l,
        "spec.selector: Invalid value: \"a b\": a valid label must be an empty string",
    );

    let l = create(
        "",
        "Service",
        service(
            json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 80, "nodePort": 30080}]}),
        ),
    );
    assert_has(&l, "spec.ports[1].name: Duplicate value: \"a\"");
    assert_has(
        &l,
        "spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}",
    );
    assert_has(
        &l,
        "spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    );

    let l = create(
        "",
        "Service",
        service(json!({"clusterIP": "10.0.0.999", "ports": [{"port": 80}]})),
    );
    assert_has(&l, "spec.clusterIPs[0]: Invalid value: \"10.0.0.999\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");

    // The cluster IP may not change once allocated.
    let old = defaulted(
        "",
        "Service",
        service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]})),
    );
    let mut new = old.clone();
    new["spec"]["ports"][0]["port"] = json!(8080);
    assert!(validate("", "Service", &new, Some(&old)).is_empty());
    new["spec"]["clusterIP"] = json!("10.96.0.11");
    new["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
    let l = lines(&validate("", "Service", &new, Some(&old)));
    assert_eq!(
        l,
        vec!["spec.clusterIPs[0]: Invalid value: [\"10.96.0.11\"]: may not change once set"]
    );
}

#[test]
fn validation_endpoints_and_slices() {
    let l = create(
        "",
        "Endpoints",
        json!({"metadata": {"name": "web", "namespace": "d"},
               "subsets": [{"ports": [{"port": 80}]},
                           {"addresses": [{"ip": "127.0.0.1"}, {"ip": "nope"}], "ports": [{"port": 80}, {"port": 81}]}]}),
    );
    assert_has(
        &l,
        "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
    );
    assert_has(&l, "subsets[1].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)");
    assert_has(&l, "subsets[1].addresses[1].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
    assert_has(&l, "subsets[1].ports[0].name: Required value");

    let slice = json!({"metadata": {"name": "web-abc", "namespace": "d"}, "addressType": "IPv4",
                       "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]});
    assert!(create("discovery.k8s.io", "EndpointSlice", slice.clone()).is_empty());
    let mut bad = slice.clone();
    bad["addressType"] = json!("IPX");
    let l = create("discovery.k8s.io", "EndpointSlice", bad.clone());
    assert_eq!(l, vec!["addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]);
    let mut bad = slice.clone();
    bad["endpoints"] = json!([{"addresses": ["fd00::1"]}, {"addresses": []}]);
    let l = create("discovery.k8s.io", "EndpointSlice", bad);
    assert_has(
        &l,
        "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
    );
    assert_has(
        &l,
        "endpoints[1].addresses: Required value: must contain at least 1 address",
    );
    let old = defaulted("discovery.k8s.io", "EndpointSlice", slice.clone());
    let mut new = old.clone();
    new["addressType"] = json!("IPv6");
    new["endpoints"] = json!([]);
    let l = lines(&validate(
        "discovery.k8s.io",
        "EndpointSlice",
        &new,
        Some(&old),
    ));
    assert_eq!(
        l,
        vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
    );
}

// ----------------------------------------------------------------------------------------
// ConfigMaps, Secrets and the other kinds
// ----------------------------------------------------------------------------------------

#[test]
fn validation_config_map() {
    let l = create(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c", "namespace": "d"},
               "data": {"good.key": "v", "bad/key": "v", "dup": "x"}, "binaryData": {"dup": "eA=="}}),
    );
    assert_eq!(l, vec![
        "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
    ]);

    let big = "x".repeat(super::core::MAX_DATA_SIZE + 1);
    let l = create(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"big": big}}),
    );
    assert_eq!(l, vec!["Too long: may not be more than 1048576 bytes"]);

    let old =
        json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}, "immutable": true});
    let mut new = old.clone();
    assert!(validate("", "ConfigMap", &new, Some(&old)).is_empty());
    new["data"]["a"] = json!("2");
    new["immutable"] = json!(false);
    let l = lines(&validate("", "ConfigMap", &new, Some(&old)));
    assert_eq!(
        l,
        vec![
            "immutable: Forbidden: field is immutable when `immutable` is set",
            "data: Forbidden: field is immutable when `immutable` is set",
        ]
    );
    // Not immutable: anything goes.
    let mutable = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}});
    assert!(validate("", "ConfigMap", &new, Some(&mutable)).is_empty());
}

#[test]
fn validation_secret() {
    let l = create(
        "",
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": "eA==", "../x": "eA=="}}),
    );
    assert_eq!(l, vec![
        "data[../x]: Invalid value: \"../x\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        "data[../x]: Invalid value: \"../x\": must not start with '..'",
        "data[tls.key]: Required value",
    ]);

    let old = defaulted(
        "",
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "d"}, "data": {"a": "eA=="}, "immutable": true}),
    );
    let mut new = old.clone();
    new["data"]["a"] = json!("eQ==");
    new["type"] = json!("kubernetes.io/basic-auth");
    let l = lines(&validate("", "Secret", &new, Some(&old)));
    assert_has(
        &l,
        "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
    );
    assert_has(
        &l,
        "data: Forbidden: field is immutable when `immutable` is set",
    );
    assert_has(&l, "data[username]: Required value");
}

#[test]
fn validation_namespace_node_lease_event() {
    let ns = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["custom"]}}),
    );
    let l = lines(&validate("", "Namespace", &ns, None));
    assert_eq!(l, vec!["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"]);
    let mut st = ns.clone();
    st["status"]["phase"] = json!("Terminating");
    let l = lines(&validate_status("", "Namespace", &st, &ns));
    assert_eq!(l, vec!["status.Phase: Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty"]);

    let l = create(
        "",
        "Node",
        json!({"metadata": {"name": "n1"},
               "spec": {"taints": [{"key": "gpu", "effect": "NoRun"}, {"key": "a", "effect": "NoSchedule"},
                                   {"key": "a", "effect": "NoSchedule", "value": "x"}],
                        "podCIDRs": ["10.0.0.0/24", "10.1.0.0/24"]},
               "status": {"capacity": {"cpu": "-1"}}}),
    );
    assert_has(&l, "spec.taints[0].effect: Unsupported value: \"NoRun\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"");
    assert_has(&l, "spec.taints[2]: Duplicate value: {\"effect\":\"NoSchedule\",\"key\":\"a\",\"value\":\"x\"}: taints must be unique by key and effect pair");
    assert_has(&l, "spec.podCIDRs: Invalid value: [\"10.0.0.0/24\",\"10.1.0.0/24\"]: may specify no more than one CIDR for each IP family");
    assert_has(
        &l,
        "status.allocatable[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
    );
    let old = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.0.0/24"], "providerID": "p1"}});
    let new = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.1.0/24"], "providerID": "p2"}});
    let l = lines(&validate("", "Node", &new, Some(&old)));
    assert_eq!(l, vec![
        "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
        "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
    ]);

    let l = create(
        "coordination.k8s.io",
        "Lease",
        json!({"metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
               "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 0, "leaseTransitions": -1,
                        "preferredHolder": "node-2"}}),
    );
    assert_eq!(
        l,
        vec![
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            "spec.preferredHolder: Forbidden: may only be specified if `strategy` is defined",
        ]
    );

    let l = create(
        "",
        "Event",
        json!({"metadata": {"name": "web.17a", "namespace": "default"}, "reason": "Started"}),
    );
    assert_eq!(l, vec!["involvedObject: Required value"]);
    let l = create(
        "",
        "Event",
        json!({"metadata": {"name": "web.17a", "namespace": "default"},
               "involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"}}),
    );
    assert_eq!(
        l,
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
}

#[test]
fn validation_prepare_update_carries_allocations() {
    let old = defaulted(
        "",
        "Service",
        service(json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                       "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                                 {"name": "https", "port": 443, "nodePort": 30443}]})),
    );
    let mut new = service(json!({"type": "NodePort",
                                 "ports": [{"name": "http", "port": 8080},
                                           {"name": "https", "port": 443, "nodePort": 30080}]}));
    prepare_update("", "Service", &mut new, &old);
    apply_defaults("", "Service", &mut new);
    assert_eq!(new["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    assert!(
        new["spec"]["ports"][0].get("nodePort").is_none(),
        "30080 is taken by another port now"
    );
    assert_eq!(new["spec"]["ports"][1]["nodePort"], 30080);
    assert!(validate("", "Service", &new, Some(&old)).is_empty());

    // To ExternalName: nothing is carried.
    let mut ext = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
    prepare_update("", "Service", &mut ext, &old);
    assert!(ext["spec"].get("clusterIP").is_none());

    // Namespace finalizers survive an update that omits or changes them.
    let old_ns = defaulted("", "Namespace", json!({"metadata": {"name": "a"}}));
    let mut new_ns =
        json!({"metadata": {"name": "a", "labels": {"team": "x"}}, "spec": {"finalizers": []}});
    prepare_update("", "Namespace", &mut new_ns, &old_ns);
    assert_eq!(new_ns["spec"]["finalizers"], json!(["kubernetes"]));
    prepare_update("", "Namespace", &mut json!(7), &old_ns);
}
