//! The resources the garbage collector watches: every kind Skiff's API server serves that
//! can own or be owned. A fixed table rather than discovery, because the server's set is
//! fixed and known at build time; an owner reference to a kind not listed here cannot be
//! resolved, and its dependent is never collected for it (as Kubernetes does for owner
//! kinds it cannot map).

use kube::api::ApiResource;

/// One watched kind.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// Every watched kind.
pub static KINDS: &[Kind] = &[
    kind("", "v1", "Namespace", "namespaces", false),
    kind("", "v1", "Node", "nodes", false),
    kind("", "v1", "Pod", "pods", true),
    kind("", "v1", "Service", "services", true),
    kind("", "v1", "Endpoints", "endpoints", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    kind("", "v1", "Secret", "secrets", true),
    kind("", "v1", "Event", "events", true),
    kind("apps", "v1", "ReplicaSet", "replicasets", true),
    kind("apps", "v1", "Deployment", "deployments", true),
    kind(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    kind("coordination.k8s.io", "v1", "Lease", "leases", true),
];

impl Kind {
    /// The `apiVersion` of this kind (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind for kube's dynamic API.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

/// The watched kind an owner reference's `apiVersion` and `kind` name. The version is not
/// compared: every version of a group-kind names the same objects.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_group_and_kind() {
        assert_eq!(
            lookup("apps/v1", "ReplicaSet").unwrap().plural,
            "replicasets"
        );
        assert_eq!(
            lookup("apps/v1beta2", "ReplicaSet").unwrap().plural,
            "replicasets"
        );
        assert_eq!(lookup("v1", "Node").map(|k| k.namespaced), Some(false));
        assert!(lookup("v1", "ReplicaSet").is_none());
        assert!(lookup("example.com/v1", "Widget").is_none());
        assert_eq!(
            lookup("discovery.k8s.io/v1", "EndpointSlice")
                .unwrap()
                .api_version(),
            "discovery.k8s.io/v1"
        );
    }
}
