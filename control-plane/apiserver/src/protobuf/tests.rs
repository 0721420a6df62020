//! The fixtures under `tests/fixtures/kubectl/` are the bodies kubectl v1.32 sent to a
//! loopback recorder (`tests/fixtures/record-kubectl.py`), beside kubectl's own JSON of
//! the same object (`--dry-run=client -o json`).

use serde_json::json;

use super::*;

/// (fixture name, kubectl's protobuf body, kubectl's JSON of the same object).
macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$((
            $name,
            include_bytes!(concat!("../../tests/fixtures/kubectl/", $name, ".pb")),
            include_str!(concat!("../../tests/fixtures/kubectl/", $name, ".json")),
        )),*]
    };
}

const FIXTURES: &[(&str, &[u8], &str)] = fixtures![
    "namespace",
    "configmap",
    "secret",
    "secret-docker-registry",
    "deployment",
    "deployment-two-images",
    "deployment-full",
    "deployment-zero",
    "service-clusterip",
    "service-headless",
    "service-nodeport",
    "service-loadbalancer",
    "service-externalname",
];

fn fixture(name: &str) -> Value {
    let (_, pb, _) = FIXTURES
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    decode_body(pb).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

// --- a minimal protobuf encoder, to build bodies kubectl would not send --------------

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited field (string, bytes, message, map entry).
fn ld(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A varint field.
fn vf(number: u32, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(number) << 3, &mut out);
    varint(n, &mut out);
    out
}

/// The whole body: magic, then `Unknown{typeMeta{apiVersion, kind}, raw}` and `extra`
/// appended to the envelope.
fn body(api_version: &str, kind: &str, raw: &[u8], extra: &[u8]) -> Vec<u8> {
    let type_meta = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
    [
        MAGIC.to_vec(),
        ld(1, &type_meta),
        ld(2, raw),
        ld(3, b""),
        ld(4, b""),
        extra.to_vec(),
    ]
    .concat()
}

/// `metadata{name}` as the first field of an object.
fn meta(name: &str) -> Vec<u8> {
    ld(1, &ld(1, name.as_bytes()))
}

/// A Deployment whose one container's fields are `container`.
fn deployment_with_container(container: &[u8]) -> Vec<u8> {
    let pod_spec = ld(2, container);
    let template = ld(2, &pod_spec);
    let spec = ld(3, &template);
    body(
        "apps/v1",
        "Deployment",
        &[meta("d"), ld(2, &spec)].concat(),
        b"",
    )
}

fn assert_error(result: Result<Value, ApiError>, code: u16, words: &str) {
    let e = result.expect_err("expected an error");
    assert_eq!(e.code, code, "{e:?}");
    assert_eq!(
        e.reason,
        if code == 415 {
            "UnsupportedMediaType"
        } else {
            "BadRequest"
        }
    );
    assert!(e.message.contains(words), "{:?} lacks {words:?}", e.message);
}

// --- kubectl's bodies ----------------------------------------------------------------

/// Every fixture decodes to exactly kubectl's own JSON of the object, less the
/// `creationTimestamp: null` Go prints for the zero time (omitted here, as Kubernetes
/// 1.33+ serves it).
#[test]
fn kubectl_bodies_decode_to_kubectls_json() {
    fn drop_null_timestamps(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, v| !(k == "creationTimestamp" && v.is_null()));
                map.values_mut().for_each(drop_null_timestamps);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_null_timestamps),
            _ => {}
        }
    }
    for (name, pb, kubectl_json) in FIXTURES {
        assert_eq!(&pb[..4], b"k8s\0", "{name}");
        let mut want: Value = serde_json::from_str(kubectl_json).unwrap();
        drop_null_timestamps(&mut want);
        let got = decode_body(pb).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn namespace() {
    let ns = fixture("namespace");
    assert_eq!(
        ns,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
               "spec": {}, "status": {}})
    );
}

#[test]
fn configmap() {
    let cm = fixture("configmap");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(
        cm["metadata"],
        json!({"name": "app-config", "namespace": "team-a"})
    );
    assert_eq!(
        cm["data"],
        json!({"mode": "fast", "greeting": "hello world"})
    );
    // --from-file of the bytes 00 01 02 fe ff: not UTF-8, so binaryData, base64.
    assert_eq!(cm["binaryData"], json!({"blob.bin": "AAEC/v8="}));
    assert!(cm.get("immutable").is_none());
}

#[test]
fn secret_data_is_base64() {
    let s = fixture("secret");
    assert_eq!(s["kind"], "Secret");
    assert_eq!(s["metadata"]["name"], "db-pass");
    assert_eq!(s["metadata"]["namespace"], "team-a");
    assert_eq!(s["data"]["username"], "YWRtaW4="); // admin
    assert_eq!(s["data"]["password"], "czNjcj10IQ=="); // s3cr=t!
                                                       // kubectl writes `type: ""`: an omitempty zero, so not served (defaulted to Opaque).
    assert!(s.get("type").is_none(), "{s}");

    let r = fixture("secret-docker-registry");
    assert_eq!(r["type"], "kubernetes.io/dockerconfigjson");
    let config = base64::engine::general_purpose::STANDARD
        .decode(r["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["auths"]["registry.example"]["username"], "u");
}

#[test]
fn deployment() {
    let d = fixture("deployment");
    assert_eq!(
        (&d["apiVersion"], &d["kind"]),
        (&json!("apps/v1"), &json!("Deployment"))
    );
    assert_eq!(
        d["metadata"],
        json!({"name": "web", "labels": {"app": "web"}})
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(spec["strategy"], json!({}));
    assert_eq!(
        spec["template"]["metadata"],
        json!({"labels": {"app": "web"}})
    );
    assert_eq!(
        spec["template"]["spec"],
        json!({"containers": [{"name": "busybox", "image": "busybox", "resources": {}}]})
    );
    assert_eq!(d["status"], json!({}));
}

#[test]
fn deployment_with_two_images() {
    let d = fixture("deployment-two-images");
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers,
        &json!([
            {"name": "busybox", "image": "busybox", "resources": {}},
            {"name": "nginx", "image": "nginx", "resources": {}},
        ])
    );
}

#[test]
fn deployment_with_replicas_port_and_command() {
    let d = fixture("deployment-full");
    assert_eq!(d["metadata"]["namespace"], "team-a");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "api"}));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "nginx");
    assert_eq!(c["image"], "nginx:1.27");
    assert_eq!(c["command"], json!(["sh", "-c", "echo hi; sleep 3600"]));
    assert!(c.get("args").is_none());
    assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
    assert_eq!(c["resources"], json!({}));
}

#[test]
fn zero_replicas_is_kept() {
    // replicas is a pointer in Kubernetes: present on the wire means set, even to 0.
    assert_eq!(fixture("deployment-zero")["spec"]["replicas"], 0);
    // minReadySeconds is not: kubectl's 0 is not served.
    assert!(fixture("deployment-zero")["spec"]
        .get("minReadySeconds")
        .is_none());
}

#[test]
fn services() {
    let s = fixture("service-clusterip");
    assert_eq!(
        s["metadata"],
        json!({"name": "web", "labels": {"app": "web"}})
    );
    assert_eq!(
        s["spec"]["ports"],
        json!([
            {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
        ])
    );
    assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert!(s["spec"].get("clusterIP").is_none());
    assert_eq!(s["status"], json!({"loadBalancer": {}}));

    let h = fixture("service-headless");
    assert_eq!(h["spec"]["clusterIP"], "None");
    assert_eq!(h["spec"]["ports"][0]["port"], 5432);
    assert_eq!(h["spec"]["ports"][0]["targetPort"], 5432);

    let n = fixture("service-nodeport");
    assert_eq!(n["spec"]["type"], "NodePort");
    assert_eq!(n["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(n["spec"]["ports"][0]["targetPort"], 8080);

    let lb = fixture("service-loadbalancer");
    assert_eq!(lb["spec"]["type"], "LoadBalancer");
    assert_eq!(lb["spec"]["ports"][0]["port"], 5678);
    assert!(lb["spec"]["ports"][0].get("nodePort").is_none());

    let ext = fixture("service-externalname");
    assert_eq!(ext["spec"]["type"], "ExternalName");
    assert_eq!(ext["spec"]["externalName"], "db.example.com");
    assert!(ext["spec"].get("ports").is_none());
}

/// The decoded objects pass what a JSON body of the same object passes: the typed
/// decoding, strict unknown-field checking, defaulting and validation.
#[test]
fn decoded_bodies_pass_the_json_pipeline() {
    for (name, pb, _) in FIXTURES {
        let mut obj = decode_body(pb).unwrap();
        let kind = obj["kind"].as_str().unwrap().to_string();
        let (group, version) = match obj["apiVersion"].as_str().unwrap() {
            "v1" => ("", "v1"),
            "apps/v1" => ("apps", "v1"),
            other => panic!("{other}"),
        };
        let unknown = crate::types::unknown_fields(group, &kind, &obj);
        assert!(unknown.is_empty(), "{name}: {unknown:?}");
        if kind != "Namespace" && obj["metadata"].get("namespace").is_none() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let obj_name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut typed = crate::types::decode(group, version, &kind, &obj_name, obj)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        crate::validation::apply_defaults(group, &kind, &mut typed);
        let causes = crate::validation::validate(group, &kind, &typed, None);
        assert!(causes.is_empty(), "{name}: {causes:?}");
    }
}

// --- what the server sends back ------------------------------------------------------

#[test]
fn unknown_fields_are_refused_not_dropped() {
    // Container field 15 (securityContext) is not declared.
    let container = [ld(1, b"c"), ld(2, b"busybox"), ld(15, &vf(3, 1))].concat();
    assert_error(
        decode_body(&deployment_with_container(&container)),
        415,
        "protobuf field 15 of io.k8s.api.core.v1.Container is not supported by this server; send JSON",
    );
    let e = decode_body(&deployment_with_container(&container)).unwrap_err();
    assert!(
        e.message.contains("spec.template.spec.containers[0]"),
        "{}",
        e.message
    );

    // kubectl's real Deployment with one more top-level field (4) appended to its raw.
    let (_, pb, _) = FIXTURES
        .iter()
        .find(|(n, _, _)| *n == "deployment")
        .unwrap();
    let envelope = DynamicMessage::decode(message(UNKNOWN).unwrap(), &pb[4..]).unwrap();
    let Some(Pv::Bytes(raw)) = envelope.get_field_by_name("raw").as_deref().cloned() else {
        panic!("no raw");
    };
    assert!(decode_body(&body("apps/v1", "Deployment", &raw, b"")).is_ok());
    let raw = [raw.to_vec(), ld(4, b"")].concat();
    assert_error(
        decode_body(&body("apps/v1", "Deployment", &raw, b"")),
        415,
        "protobuf field 4 of io.k8s.api.apps.v1.Deployment is not supported by this server; send JSON",
    );

    // A top-level field ConfigMap does not have.
    let raw_with_extra = [meta("x"), ld(9, b"surprise")].concat();
    assert_error(
        decode_body(&body("v1", "ConfigMap", &raw_with_extra, b"")),
        415,
        "protobuf field 9 of io.k8s.api.core.v1.ConfigMap is not supported",
    );

    // In ObjectMeta (managedFields, 17), in a map value (Quantity), in the envelope.
    let metadata = [ld(1, b"n"), ld(17, &ld(1, b"kubectl"))].concat();
    assert_error(
        decode_body(&body("v1", "Namespace", &ld(1, &metadata), b"")),
        415,
        "protobuf field 17 of io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    );
    let quantity = [ld(1, b"500m"), vf(2, 1)].concat();
    let limits = ld(1, &[ld(1, b"cpu"), ld(2, &quantity)].concat());
    let container = [ld(1, b"c"), ld(8, &limits)].concat();
    assert_error(
        decode_body(&deployment_with_container(&container)),
        415,
        "protobuf field 2 of io.k8s.apimachinery.pkg.api.resource.Quantity",
    );
    assert_error(
        decode_body(&body("v1", "Namespace", &meta("n"), &vf(7, 1))),
        415,
        "protobuf field 7 of io.k8s.apimachinery.pkg.runtime.Unknown",
    );
}

#[test]
fn declared_fields_beyond_kubectls() {
    let quantity = ld(1, b"500m");
    let limits = ld(1, &[ld(1, b"cpu"), ld(2, &quantity)].concat());
    let env = [ld(1, b"MODE"), ld(2, b"fast")].concat();
    let container = [ld(1, b"c"), ld(7, &env), ld(8, &limits), ld(20, b"File")].concat();
    let d = decode_body(&deployment_with_container(&container)).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"], json!([{"name": "MODE", "value": "fast"}]));
    assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
    assert_eq!(c["terminationMessagePolicy"], "File");

    // Time as RFC 3339; IntOrString as a string; pointer bool false kept.
    let time = [vf(1, 1_704_164_645), vf(2, 5)].concat();
    let metadata = [ld(1, b"n"), ld(8, &time), ld(14, b"kubernetes")].concat();
    let ns = decode_body(&body("v1", "Namespace", &ld(1, &metadata), b"")).unwrap();
    assert_eq!(ns["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");
    assert_eq!(ns["metadata"]["finalizers"], json!(["kubernetes"]));
    let cm = decode_body(&body(
        "v1",
        "ConfigMap",
        &[meta("c"), vf(4, 0)].concat(),
        b"",
    ))
    .unwrap();
    assert_eq!(cm["immutable"], false);
    let surge = [vf(1, 1), ld(3, b"25%")].concat();
    let strategy = [ld(1, b"RollingUpdate"), ld(2, &ld(2, &surge))].concat();
    let d = decode_body(&body(
        "apps/v1",
        "Deployment",
        &[meta("d"), ld(2, &ld(4, &strategy))].concat(),
        b"",
    ))
    .unwrap();
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
    );
}

#[test]
fn unsupported_kinds_and_envelopes() {
    assert_error(
        decode_body(&body("batch/v1", "Job", &meta("j"), b"")),
        415,
        "protobuf bodies of batch/v1 Job are not supported by this server",
    );
    assert_error(
        decode_body(&body("v1", "Pod", &meta("p"), b"")),
        415,
        "(it decodes v1 Namespace, v1 ConfigMap, v1 Secret, v1 Service, apps/v1 Deployment)",
    );
    // A kind under the wrong apiVersion is another kind.
    assert_error(
        decode_body(&body("apps/v1", "ConfigMap", &meta("p"), b"")),
        415,
        "apps/v1 ConfigMap",
    );
    assert_error(
        decode_body(&body("v1", "Namespace", &meta("n"), &ld(3, b"gzip"))),
        415,
        "contentEncoding \"gzip\"",
    );
    assert_error(
        decode_body(&body(
            "v1",
            "Namespace",
            &meta("n"),
            &ld(4, b"application/json"),
        )),
        415,
        "holding \"application/json\"",
    );
    assert_error(
        decode_body(&body("", "", &meta("n"), b"")),
        400,
        "does not name its kind",
    );
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let (_, pb, _) = FIXTURES[0];
    let magic = "does not start with the Kubernetes magic";
    assert_error(decode_body(b""), 400, magic);
    assert_error(decode_body(b"k8s"), 400, magic);
    assert_error(decode_body(&pb[4..]), 400, magic);
    assert_error(decode_body(br#"{"kind":"Namespace"}"#), 400, magic);
    let mut wrong = pb.to_vec();
    wrong[3] = b'!';
    assert_error(decode_body(&wrong), 400, magic);

    // Truncated mid-message.
    assert_error(decode_body(&pb[..pb.len() - 3]), 400, "malformed");
    // A string field sent as a varint: wrong wire type.
    assert_error(
        decode_body(&body("v1", "Namespace", &ld(1, &vf(1, 7)), b"")),
        400,
        "malformed",
    );
    // A name that is not UTF-8.
    assert_error(
        decode_body(&body("v1", "Namespace", &ld(1, &ld(1, &[0xff, 0xfe])), b"")),
        400,
        "malformed",
    );
    // An IntOrString of type 2; a time out of range.
    let port = [vf(3, 80), ld(4, &vf(1, 2))].concat();
    assert_error(
        decode_body(&body(
            "v1",
            "Service",
            &[meta("s"), ld(2, &ld(1, &port))].concat(),
            b"",
        )),
        400,
        "neither 0 (int) nor 1 (string)",
    );
    let time = vf(1, i64::MAX as u64);
    assert_error(
        decode_body(&body("v1", "Namespace", &ld(1, &ld(8, &time)), b"")),
        400,
        "out of range",
    );
}

/// Every truncation and every single-byte corruption of every fixture gives a result or
/// an error, never a panic.
#[test]
fn corrupted_bodies_never_panic() {
    for (name, pb, _) in FIXTURES {
        for len in 0..pb.len() {
            let _ = decode_body(&pb[..len]);
        }
        for i in 4..pb.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = pb.to_vec();
                b[i] ^= flip;
                if let Err(e) = decode_body(&b) {
                    assert!(matches!(e.code, 400 | 415), "{name}[{i}]^{flip}: {e:?}");
                }
            }
        }
    }
}

#[test]
fn media_type() {
    assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
    assert!(is_protobuf(
        "application/vnd.kubernetes.protobuf; charset=x"
    ));
    assert!(!is_protobuf("application/vnd.kubernetes.protobuf-x"));
    assert!(!is_protobuf("application/json"));
    assert!(!is_protobuf(""));
}
