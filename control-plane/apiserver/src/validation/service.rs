//! Services, Endpoints and EndpointSlices: defaults and validation as in
//! `pkg/apis/core/v1/defaults.go`, `pkg/apis/core/validation` and
//! `pkg/apis/discovery/validation`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::meta::validate_labels;
use super::names::{is_dns1123_label, is_dns1123_subdomain, is_port_num, is_qualified_name};
use super::pod::{validate_port_num_or_name, validate_protocol};
use super::util::{
    arr, child, child_if, default_missing, default_zero, int, invalid_each, items_mut, present, s,
    se, too_many, Causes,
};
use crate::error::FieldCause;

/// Kubernetes's message for a string that is not an IP address.
pub const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Service defaults: type ClusterIP, sessionAffinity None (with the ClientIP timeout when
/// ClientIP), port protocol TCP and targetPort = port, traffic policies, and the IP family
/// fields the allocator would record: `ipFamilyPolicy` SingleStack (RequireDualStack for a
/// headless service without selector, as Kubernetes does) and `ipFamilies` from the
/// cluster IP (IPv4 until one is allocated). `clusterIP` and `clusterIPs[0]` are kept in
/// step. ExternalName services get none of the cluster-IP fields. The cluster IP itself
/// is the caller's to allocate.
pub fn default_service(svc: &mut Value) {
    let Some(spec) = child(svc, "spec") else {
        return;
    };
    default_zero(spec, "sessionAffinity", json!("None"));
    match se(spec, "sessionAffinity") {
        "None" => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                if let Some(m) = spec.as_object_mut() {
                    m.insert(
                        "sessionAffinityConfig".into(),
                        json!({"clientIP": {"timeoutSeconds": 10800}}),
                    );
                }
            }
        }
        _ => {}
    }
    default_zero(spec, "type", json!("ClusterIP"));
    let ty = se(spec, "type").to_string();
    for p in items_mut(spec, "ports") {
        default_zero(p, "protocol", json!("TCP"));
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            _ => false,
        };
        if target_unset {
            if let Some(port) = p.get("port").cloned() {
                if let Some(m) = p.as_object_mut() {
                    m.insert("targetPort".into(), port);
                }
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        default_missing(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_missing(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty == "ExternalName" {
        return;
    }
    // clusterIP <-> clusterIPs[0].
    let ip = se(spec, "clusterIP").to_string();
    let first = arr(spec, "clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(m) = spec.as_object_mut() {
        if first.is_empty() && !ip.is_empty() {
            m.insert("clusterIPs".into(), json!([ip]));
        } else if ip.is_empty() && !first.is_empty() {
            m.insert("clusterIP".into(), json!(first));
        }
    }
    let headless = se(spec, "clusterIP") == "None";
    let no_selector = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    let policy = if headless && no_selector {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    default_zero(spec, "ipFamilyPolicy", json!(policy));
    if arr(spec, "ipFamilies").is_empty() {
        let families: Vec<&str> = arr(spec, "clusterIPs")
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
        let families = if families.is_empty() {
            vec!["IPv4"]
        } else {
            families
        };
        if let Some(m) = spec.as_object_mut() {
            m.insert("ipFamilies".into(), json!(families));
        }
    }
    if ty == "LoadBalancer" {
        if let Some(lb) = child_if(svc, "status").and_then(|s| child_if(s, "loadBalancer")) {
            for ing in items_mut(lb, "ingress") {
                if !se(ing, "ip").is_empty() {
                    default_missing(ing, "ipMode", json!("VIP"));
                }
            }
        }
    }
}

/// The allocations of a stored Service that an update omitting them keeps (Kubernetes's
/// `patchAllocatedValues`): cluster IPs while neither side is ExternalName; node ports
/// (matched by port name, unless another port already uses the value) and the health-check
/// node port while both sides need them.
pub fn carry_over_allocations(new: &mut Value, old: &Value) {
    let null = Value::Null;
    let os = old.get("spec").unwrap_or(&null);
    let Some(ns) = child(new, "spec") else {
        return;
    };
    let old_ty = match se(os, "type") {
        "" => "ClusterIP",
        t => t,
    };
    let new_ty = match se(ns, "type") {
        "" => "ClusterIP".to_string(),
        t => t.to_string(),
    };
    if old_ty != "ExternalName" && new_ty != "ExternalName" {
        if se(ns, "clusterIP").is_empty() {
            if let Some(ip) = present(os, "clusterIP").cloned() {
                default_zero(ns, "clusterIP", ip);
            }
        }
        if arr(ns, "clusterIPs").is_empty() && !arr(os, "clusterIPs").is_empty() {
            if let Some(m) = ns.as_object_mut() {
                m.insert("clusterIPs".into(), os["clusterIPs"].clone());
            }
        }
    }
    let needs_node_port = |ty: &str, spec: &Value| {
        ty == "NodePort"
            || (ty == "LoadBalancer"
                && spec
                    .get("allocateLoadBalancerNodePorts")
                    .and_then(Value::as_bool)
                    .unwrap_or(true))
    };
    if needs_node_port(old_ty, os) && needs_node_port(&new_ty, ns) {
        let used: BTreeSet<i64> = arr(ns, "ports")
            .iter()
            .filter_map(|p| int(p, "nodePort"))
            .filter(|n| *n != 0)
            .collect();
        let by_name: Vec<(String, i64)> = arr(os, "ports")
            .iter()
            .filter_map(|p| Some((se(p, "name").to_string(), int(p, "nodePort")?)))
            .collect();
        for p in items_mut(ns, "ports") {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                continue;
            }
            let name = se(p, "name").to_string();
            if let Some((_, n)) = by_name.iter().find(|(pn, _)| *pn == name) {
                if *n != 0 && !used.contains(n) {
                    default_zero(p, "nodePort", json!(n));
                }
            }
        }
    }
    let needs_hc = |ty: &str, spec: &Value| {
        ty == "LoadBalancer" && se(spec, "externalTrafficPolicy") == "Local"
    };
    if needs_hc(old_ty, os) && needs_hc(&new_ty, ns) {
        if let Some(hc) = present(os, "healthCheckNodePort").cloned() {
            default_zero(ns, "healthCheckNodePort", hc);
        }
    }
}

/// Endpoints defaults: port protocol TCP.
pub fn default_endpoints(ep: &mut Value) {
    for ss in items_mut(ep, "subsets") {
        for p in items_mut(ss, "ports") {
            default_zero(p, "protocol", json!("TCP"));
        }
    }
}

/// EndpointSlice defaults: port protocol TCP and port name `""`.
pub fn default_endpoint_slice(es: &mut Value) {
    for p in items_mut(es, "ports") {
        default_zero(p, "protocol", json!("TCP"));
        default_missing(p, "name", json!(""));
    }
}

fn is_headless(spec: &Value) -> bool {
    se(spec, "clusterIP") == "None"
}

/// Validates a Service's spec (`ValidateService`).
pub fn validate_service(svc: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let spec = svc.get("spec").unwrap_or(&null);
    let ty = se(spec, "type");
    let ports = arr(spec, "ports");
    if ports.is_empty() && !is_headless(spec) && ty != "ExternalName" {
        errs.push(FieldCause::required("spec.ports", ""));
    }
    match ty {
        "ExternalName" => {
            if !arr(spec, "clusterIPs").is_empty() || !se(spec, "clusterIP").is_empty() {
                errs.push(FieldCause::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = se(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldCause::required("spec.externalName", ""));
            } else {
                invalid_each(
                    errs,
                    "spec.externalName",
                    cname,
                    is_dns1123_subdomain(cname),
                );
            }
        }
        "" => errs.push(FieldCause::required("spec.type", "")),
        t if !SERVICE_TYPES.contains(&t) => errs.push(FieldCause::not_supported(
            "spec.type",
            &json!(t),
            SERVICE_TYPES,
        )),
        _ => {}
    }
    validate_cluster_ips(spec, errs);
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = se(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldCause::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            invalid_each(errs, &format!("{pp}.name"), name, is_dns1123_label(name));
            if !names.insert(name.to_string()) {
                errs.push(FieldCause::duplicate(format!("{pp}.name"), &json!(name)));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        for m in is_port_num(port) {
            errs.push(FieldCause::invalid(format!("{pp}.port"), &json!(port), &m));
        }
        validate_protocol(p, &pp, errs);
        validate_port_num_or_name(p.get("targetPort"), &format!("{pp}.targetPort"), errs);
        if let Some(ap) = s(p, "appProtocol") {
            invalid_each(
                errs,
                &format!("{pp}.appProtocol"),
                ap,
                is_qualified_name(ap),
            );
        }
        if ty == "ClusterIP" && int(p, "nodePort").unwrap_or(0) != 0 {
            errs.push(FieldCause::forbidden(
                format!("{pp}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if let Some(np) = int(p, "nodePort").filter(|n| *n != 0) {
            for m in is_port_num(np) {
                errs.push(FieldCause::invalid(
                    format!("{pp}.nodePort"),
                    &json!(np),
                    &m,
                ));
            }
        }
        let key = (se(p, "protocol").to_string(), port);
        if !seen.insert(key) {
            errs.push(FieldCause::duplicate(
                &pp,
                &json!({"port": port, "protocol": se(p, "protocol")}),
            ));
        }
    }
    if present(spec, "selector").is_some() {
        validate_labels(spec, "selector", "spec.selector", errs);
    }
    match se(spec, "sessionAffinity") {
        "" => errs.push(FieldCause::required("spec.sessionAffinity", "")),
        "ClientIP" | "None" => {}
        other => errs.push(FieldCause::not_supported(
            "spec.sessionAffinity",
            &json!(other),
            &["ClientIP", "None"],
        )),
    }
    if let Some(t) = spec
        .get("sessionAffinityConfig")
        .and_then(|c| c.get("clientIP"))
        .and_then(|c| int(c, "timeoutSeconds"))
    {
        if !(1..=86400).contains(&t) {
            errs.push(FieldCause::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                &json!(t),
                "must be greater than 0 and less than 86400",
            ));
        }
    }
    if let Some(p) = present(spec, "internalTrafficPolicy") {
        let v = p.as_str().unwrap_or("");
        if !matches!(v, "Cluster" | "Local") {
            errs.push(FieldCause::not_supported(
                "spec.internalTrafficPolicy",
                p,
                &["Cluster", "Local"],
            ));
        }
    } else if ty != "ExternalName" {
        errs.push(FieldCause::required("spec.internalTrafficPolicy", ""));
    }
    let etp = se(spec, "externalTrafficPolicy");
    if !etp.is_empty() {
        if !matches!(ty, "NodePort" | "LoadBalancer") {
            errs.push(FieldCause::invalid(
                "spec.externalTrafficPolicy",
                &json!(etp),
                "may only be set for externally-accessible services",
            ));
        } else if !matches!(etp, "Cluster" | "Local") {
            errs.push(FieldCause::not_supported(
                "spec.externalTrafficPolicy",
                &json!(etp),
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(p) = present(spec, "ipFamilyPolicy") {
        let v = p.as_str().unwrap_or("");
        if !matches!(v, "SingleStack" | "PreferDualStack" | "RequireDualStack") {
            errs.push(FieldCause::not_supported(
                "spec.ipFamilyPolicy",
                p,
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    let mut fams = BTreeSet::new();
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let v = f.as_str().unwrap_or("");
        if !matches!(v, "IPv4" | "IPv6") {
            errs.push(FieldCause::not_supported(
                format!("spec.ipFamilies[{i}]"),
                f,
                &["IPv4", "IPv6"],
            ));
        } else if !fams.insert(v) {
            errs.push(FieldCause::duplicate(format!("spec.ipFamilies[{i}]"), f));
        }
    }
    if arr(spec, "ipFamilies").len() > 1 && se(spec, "ipFamilyPolicy") == "SingleStack" {
        errs.push(FieldCause::invalid(
            "spec.ipFamilies",
            spec.get("ipFamilies").unwrap_or(&Value::Null),
            "when multiple IP families are specified, `ipFamilyPolicy` must be set to 'PreferDualStack' or 'RequireDualStack'",
        ));
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let v = ip.as_str().unwrap_or("");
        if v.parse::<IpAddr>().is_err() {
            errs.push(FieldCause::invalid(
                format!("spec.externalIPs[{i}]"),
                &json!(v),
                IP_MSG,
            ));
        }
    }
}

fn validate_cluster_ips(spec: &Value, errs: &mut Causes) {
    let ip = se(spec, "clusterIP");
    let ips = arr(spec, "clusterIPs");
    if let Some(first) = ips.first().and_then(Value::as_str) {
        if !ip.is_empty() && first != ip {
            errs.push(FieldCause::invalid(
                "spec.clusterIPs",
                spec.get("clusterIPs").unwrap_or(&Value::Null),
                "first value must match `clusterIP`",
            ));
        }
    }
    for (i, v) in ips.iter().enumerate() {
        let v = v.as_str().unwrap_or("");
        if i == 0 && v == "None" {
            if ips.len() > 1 {
                errs.push(FieldCause::invalid(
                    "spec.clusterIPs",
                    spec.get("clusterIPs").unwrap_or(&Value::Null),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if v.parse::<IpAddr>().is_err() {
            errs.push(FieldCause::invalid(
                format!("spec.clusterIPs[{i}]"),
                &json!(v),
                IP_MSG,
            ));
        }
    }
    if ips.is_empty() && !ip.is_empty() && ip != "None" && ip.parse::<IpAddr>().is_err() {
        errs.push(FieldCause::invalid("spec.clusterIP", &json!(ip), IP_MSG));
    }
}

/// Update rules of a Service: once allocated, the primary cluster IP may not change
/// (unless the service changes to or from ExternalName, or stays headless).
pub fn validate_service_update(new: &Value, old: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    if se(ns, "type") == "ExternalName" || se(os, "type") == "ExternalName" {
        return;
    }
    if is_headless(ns) && is_headless(os) {
        return;
    }
    let primary = |spec: &Value| -> String {
        arr(spec, "clusterIPs")
            .first()
            .and_then(Value::as_str)
            .unwrap_or_else(|| se(spec, "clusterIP"))
            .to_string()
    };
    let (np, op) = (primary(ns), primary(os));
    let shown = ns.get("clusterIPs").cloned().unwrap_or_else(|| {
        json!(if np.is_empty() {
            vec![]
        } else {
            vec![np.clone()]
        })
    });
    if !op.is_empty() && np.is_empty() {
        errs.push(FieldCause::invalid(
            "spec.clusterIPs[0]",
            &shown,
            "primary clusterIP can not be unset",
        ));
    } else if !op.is_empty() && np != op {
        errs.push(FieldCause::invalid(
            "spec.clusterIPs[0]",
            &shown,
            "may not change once set",
        ));
    }
}

/// Service status sanity: load-balancer ingress IPs are IP addresses.
pub fn validate_service_status(svc: &Value, errs: &mut Causes) {
    let null = Value::Null;
    let lb = svc
        .get("status")
        .and_then(|s| s.get("loadBalancer"))
        .unwrap_or(&null);
    for (i, ing) in arr(lb, "ingress").iter().enumerate() {
        let ip = se(ing, "ip");
        if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            errs.push(FieldCause::invalid(
                format!("status.loadBalancer.ingress[{i}].ip"),
                &json!(ip),
                IP_MSG,
            ));
        }
        let host = se(ing, "hostname");
        if !host.is_empty() {
            invalid_each(
                errs,
                &format!("status.loadBalancer.ingress[{i}].hostname"),
                host,
                is_dns1123_subdomain(host),
            );
            if host.parse::<IpAddr>().is_ok() {
                errs.push(FieldCause::invalid(
                    format!("status.loadBalancer.ingress[{i}].hostname"),
                    &json!(host),
                    "must be a DNS name, not an IP address",
                ));
            }
        }
    }
}

/// Why an endpoint IP cannot be used (unspecified, loopback, link-local).
fn special_ip(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("may not be unspecified (0.0.0.0)");
    }
    if ip.is_loopback() {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    let ll_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => (v6.segments()[0] & 0xff0f) == 0xff02,
    };
    if ll_multicast {
        return Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
    None
}

/// Validates Endpoints subsets.
pub fn validate_endpoints(ep: &Value, errs: &mut Causes) {
    for (i, ss) in arr(ep, "subsets").iter().enumerate() {
        let p = format!("subsets[{i}]");
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            errs.push(FieldCause::required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, list).iter().enumerate() {
                let ap = format!("{p}.{list}[{j}]");
                let ip = se(a, "ip");
                match ip.parse::<IpAddr>() {
                    Err(_) => {
                        errs.push(FieldCause::invalid(format!("{ap}.ip"), &json!(ip), IP_MSG))
                    }
                    Ok(addr) => {
                        if let Some(m) = special_ip(addr) {
                            errs.push(FieldCause::invalid(format!("{ap}.ip"), &json!(ip), m));
                        }
                    }
                }
                let host = se(a, "hostname");
                if !host.is_empty() {
                    invalid_each(
                        errs,
                        &format!("{ap}.hostname"),
                        host,
                        is_dns1123_label(host),
                    );
                }
                if let Some(n) = s(a, "nodeName") {
                    invalid_each(errs, &format!("{ap}.nodeName"), n, is_dns1123_subdomain(n));
                }
            }
        }
        let ports = arr(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            let name = se(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldCause::required(format!("{pp}.name"), ""));
            } else if !name.is_empty() {
                invalid_each(errs, &format!("{pp}.name"), name, is_dns1123_label(name));
            }
            let n = int(port, "port").unwrap_or(0);
            for m in is_port_num(n) {
                errs.push(FieldCause::invalid(format!("{pp}.port"), &json!(n), &m));
            }
            validate_protocol(port, &pp, errs);
        }
    }
}

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

/// Validates an EndpointSlice: address type (on create; immutable on update), endpoints
/// and ports.
pub fn validate_endpoint_slice(es: &Value, old: Option<&Value>, errs: &mut Causes) {
    let at = se(es, "addressType");
    match old {
        None => {
            if at.is_empty() {
                errs.push(FieldCause::required("addressType", ""));
            } else if !ADDRESS_TYPES.contains(&at) {
                errs.push(FieldCause::not_supported(
                    "addressType",
                    &json!(at),
                    ADDRESS_TYPES,
                ));
            }
        }
        Some(o) => {
            if at != se(o, "addressType") {
                errs.push(FieldCause::invalid(
                    "addressType",
                    &json!(at),
                    super::util::IMMUTABLE,
                ));
            }
        }
    }
    let endpoints = arr(es, "endpoints");
    if endpoints.len() > 1000 {
        errs.push(too_many("endpoints", endpoints.len(), 1000));
    } else {
        for (i, e) in endpoints.iter().enumerate() {
            let p = format!("endpoints[{i}]");
            let addrs = arr(e, "addresses");
            if addrs.is_empty() {
                errs.push(FieldCause::required(
                    format!("{p}.addresses"),
                    "must contain at least 1 address",
                ));
            } else if addrs.len() > 100 {
                errs.push(too_many(format!("{p}.addresses"), addrs.len(), 100));
            }
            for (j, a) in addrs.iter().enumerate() {
                let a = a.as_str().unwrap_or("");
                let ap = format!("{p}.addresses[{j}]");
                let parsed = a.parse::<IpAddr>().ok();
                match at {
                    "IPv4" if !parsed.is_some_and(|x| x.is_ipv4()) => {
                        errs.push(FieldCause::invalid(
                            ap,
                            &json!(a),
                            "must be a valid IPv4 address",
                        ));
                    }
                    "IPv6" if !parsed.is_some_and(|x| x.is_ipv6()) => {
                        errs.push(FieldCause::invalid(
                            ap,
                            &json!(a),
                            "must be a valid IPv6 address",
                        ));
                    }
                    "FQDN" => {
                        let name = a.strip_suffix('.').unwrap_or(a);
                        if name.is_empty() {
                            errs.push(FieldCause::required(ap, ""));
                        } else if let Some(m) = is_dns1123_subdomain(name).into_iter().next() {
                            errs.push(FieldCause::invalid(ap, &json!(name), &m));
                        } else if !name.contains('.') {
                            errs.push(FieldCause::invalid(
                                ap,
                                &json!(name),
                                "should be a domain with at least two segments separated by dots",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(n) = s(e, "nodeName") {
                invalid_each(errs, &format!("{p}.nodeName"), n, is_dns1123_subdomain(n));
            }
            if let Some(h) = s(e, "hostname") {
                invalid_each(errs, &format!("{p}.hostname"), h, is_dns1123_label(h));
            }
            validate_labels(
                e,
                "deprecatedTopology",
                &format!("{p}.deprecatedTopology"),
                errs,
            );
        }
    }
    let ports = arr(es, "ports");
    if ports.len() > 20000 {
        errs.push(too_many("ports", ports.len(), 20000));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("ports[{i}]");
        let name = se(port, "name");
        if !name.is_empty() {
            invalid_each(errs, &format!("{pp}.name"), name, is_dns1123_label(name));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldCause::duplicate(format!("{pp}.name"), &json!(name)));
        }
        match present(port, "protocol") {
            None => errs.push(FieldCause::required(format!("{pp}.protocol"), "")),
            Some(_) => validate_protocol(port, &pp, errs),
        }
        if let Some(n) = int(port, "port") {
            if !(0..=65535).contains(&n) {
                errs.push(FieldCause::invalid(
                    format!("{pp}.port"),
                    &json!(n),
                    "must be between 0 and 65535, inclusive",
                ));
            }
        }
        if let Some(ap) = s(port, "appProtocol") {
            invalid_each(
                errs,
                &format!("{pp}.appProtocol"),
                ap,
                is_qualified_name(ap),
            );
        }
    }
}
