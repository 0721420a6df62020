//! The patch metadata of the built-in types: which fields are lists merged by key, primitive
//! sets, or maps whose absent keys a `$retainKeys` directive clears.
//!
//! This is the one table both the strategic merge patch and the OpenAPI document
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) read. Its rows are the
//! `patchStrategy` / `patchMergeKey` struct tags of the Kubernetes 1.32 API types
//! (`k8s.io/api` v0.32.0 `core/v1`, `apps/v1`; `k8s.io/apimachinery` `meta/v1`), keyed by
//! the definition names k8s-openapi's `schemars` impls use. Fields without a tag are absent:
//! maps merge recursively and lists are replaced wholesale (`tolerations`, node `taints`,
//! `containerStatuses`, endpoint `subsets`, …), exactly as upstream.
//!
//! Inline Go structs are flattened into the definition that embeds them, as in the OpenAPI
//! document: `EphemeralContainerCommon`'s tags are listed under `EphemeralContainer`.

/// Patch metadata of one field of one OpenAPI definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPatchMeta {
    /// `merge`, `replace`, `retainKeys` or `merge,retainKeys`, as in the struct tag.
    pub strategy: &'static str,
    /// For lists of objects merged by key: the key (`name`, `containerPort`, …).
    /// `None` for lists of primitives merged as sets (`finalizers`) and for maps.
    pub merge_key: Option<&'static str>,
}

impl FieldPatchMeta {
    /// Whether the field is a list whose elements are merged (by key, or as a set of
    /// primitives) rather than replaced.
    pub fn merges_lists(&self) -> bool {
        self.strategy.split(',').any(|s| s == "merge")
    }

    /// Whether the whole value is replaced by the patch's value (strategy `replace`).
    pub fn replaces(&self) -> bool {
        self.strategy.split(',').any(|s| s == "replace")
    }

    /// Whether the field (or each element of the list) honours a `$retainKeys` directive.
    pub fn retains_keys(&self) -> bool {
        self.strategy.split(',').any(|s| s == "retainKeys")
    }
}

/// One row of [`FIELD_PATCH_META`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPatchMetaEntry {
    /// The OpenAPI definition, as k8s-openapi names it (`io.k8s.api.core.v1.PodSpec`).
    pub definition: &'static str,
    /// The JSON name of the field (`containers`).
    pub field: &'static str,
    /// Its strategy and merge key.
    pub meta: FieldPatchMeta,
}

const fn row(
    definition: &'static str,
    field: &'static str,
    strategy: &'static str,
    merge_key: Option<&'static str>,
) -> FieldPatchMetaEntry {
    FieldPatchMetaEntry {
        definition,
        field,
        meta: FieldPatchMeta {
            strategy,
            merge_key,
        },
    }
}

/// Merge-by-key lists, one row per field.
const fn keyed(
    definition: &'static str,
    field: &'static str,
    key: &'static str,
) -> FieldPatchMetaEntry {
    row(definition, field, "merge", Some(key))
}

/// Every field with patch metadata, in the order of the Go sources.
pub static FIELD_PATCH_META: &[FieldPatchMetaEntry] = &[
    // meta/v1
    keyed(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
    ),
    row(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    // core/v1
    keyed(
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "type",
    ),
    keyed("io.k8s.api.core.v1.Container", "ports", "containerPort"),
    keyed("io.k8s.api.core.v1.Container", "env", "name"),
    keyed("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath"),
    keyed(
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
    ),
    keyed(
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        "mountPath",
    ),
    keyed(
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        "name",
    ),
    row(
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    keyed("io.k8s.api.core.v1.PodSpec", "initContainers", "name"),
    keyed("io.k8s.api.core.v1.PodSpec", "containers", "name"),
    keyed("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name"),
    keyed("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name"),
    keyed("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip"),
    keyed(
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
    ),
    keyed("io.k8s.api.core.v1.PodSpec", "schedulingGates", "name"),
    row(
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    keyed(
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
    ),
    keyed("io.k8s.api.core.v1.EphemeralContainer", "env", "name"),
    keyed(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
    ),
    keyed(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
    ),
    keyed("io.k8s.api.core.v1.PodStatus", "conditions", "type"),
    keyed("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip"),
    keyed("io.k8s.api.core.v1.PodStatus", "podIPs", "ip"),
    row(
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    keyed(
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "type",
    ),
    keyed("io.k8s.api.core.v1.ServiceStatus", "conditions", "type"),
    // Upstream keys service ports by `port` alone (a known limitation: the same port with
    // two protocols cannot be patched apart); kubectl computes its patches the same way.
    keyed("io.k8s.api.core.v1.ServiceSpec", "ports", "port"),
    keyed("io.k8s.api.core.v1.ServiceAccount", "secrets", "name"),
    row("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    keyed("io.k8s.api.core.v1.NodeStatus", "conditions", "type"),
    keyed("io.k8s.api.core.v1.NodeStatus", "addresses", "type"),
    keyed("io.k8s.api.core.v1.NamespaceStatus", "conditions", "type"),
    keyed("io.k8s.api.core.v1.ComponentStatus", "conditions", "type"),
    // apps/v1
    keyed("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type"),
    row(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    keyed("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type"),
    keyed("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "type"),
    keyed("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type"),
];

/// The patch metadata of `field` of `definition` (`("io.k8s.api.core.v1.PodSpec",
/// "containers")` → merge by `name`), or `None` when the field has none: then maps merge
/// recursively and lists are replaced.
pub fn field_patch_meta(definition: &str, field: &str) -> Option<FieldPatchMeta> {
    // A linear scan: the table has ~40 rows and the comparison of the definition usually
    // fails on its length, so a hash map would not be faster.
    FIELD_PATCH_META
        .iter()
        .find(|e| e.field == field && e.definition == definition)
        .map(|e| e.meta)
}
