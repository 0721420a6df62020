//! The semantics of the API, independent of its transports (REST and gRPC share them):
//! create, read, update, patch and delete objects in the store with Kubernetes's
//! server-set metadata, defaulting, validation, optimistic concurrency and deletion rules.
//!
//! Every write is one store transaction that compares what it read: a create compares
//! create_revision == 0 (else 409 AlreadyExists), an update or delete compares the
//! mod_revision it started from (else, for a client-given resourceVersion, 409 Conflict;
//! for an unconditional write, another round on the fresh object).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};
use skiff_proto::etcdserverpb::response_op::Response as OpResp;
use skiff_proto::etcdserverpb::{RangeRequest, TxnRequest, TxnResponse};

use crate::cache::{Filter, ResourceCache};
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::fence;
use crate::objects::{self, meta_mut, meta_str, Cached};
use crate::patch::{self, PatchType};
use crate::resources::{self, ResourceInfo, RESOURCES};
use crate::store::{cmp_create, cmp_mod, op_delete, op_get, op_put, Store, StoreError};
use crate::validation;

/// Rounds an unconditional update or a patch may take when racing other writers.
const WRITE_ROUNDS: usize = 16;
/// How long a consistent read from the cache waits for the cache to catch up before
/// reading the store instead.
const CACHE_WAIT: Duration = Duration::from_secs(3);
/// The store key under which API servers agree on compaction.
const COMPACT_KEY: &[u8] = b"/registry/compact_rev_key";
/// Store keys recording allocated ClusterIPs, one per address.
const SERVICE_IP_PREFIX: &str = "/registry/ranges/serviceips/";

/// `fieldValidation`: what to do with unknown fields in a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (absent → Warn, as Kubernetes ≥ 1.27 does).
    pub fn parse(s: Option<&str>) -> ApiResult<FieldValidation> {
        match s.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Options of a write.
#[derive(Clone, Copy, Debug)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub validation: FieldValidation,
}

impl Default for WriteOpts {
    fn default() -> Self {
        WriteOpts {
            dry_run: false,
            validation: FieldValidation::Strict,
        }
    }
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object: spec and metadata; status is kept as stored when the resource has a
    /// status subresource.
    Main,
    /// `/status`: only status changes.
    Status,
    /// `/scale`: an `autoscaling/v1 Scale` view of spec.replicas.
    Scale,
}

/// The result of a write.
#[derive(Debug)]
pub struct Outcome {
    pub object: Value,
    /// `Warning` headers for the client (unknown fields under fieldValidation=Warn).
    pub warnings: Vec<String>,
    /// A create (201) rather than an update (200).
    pub created: bool,
}

/// Options of a list.
#[derive(Clone, Debug, Default)]
pub struct ListOpts {
    pub resource_version: String,
    pub exact: bool,
    pub limit: i64,
    pub continue_token: String,
}

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Arc<Cached>>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
}

/// The registry: the store, the watch caches and the ClusterIP range.
pub struct Registry {
    pub store: Arc<Store>,
    caches: HashMap<&'static str, Arc<ResourceCache>>,
    service_net: (u32, u32),
}

/// `now` as Kubernetes writes times: RFC 3339 in UTC, whole seconds.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn random_suffix() -> String {
    // Kubernetes's alphabet for generated names: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Parses `a.b.c.d/n` into (network base, size).
pub fn parse_cidr(cidr: &str) -> anyhow::Result<(u32, u32)> {
    let (ip, bits) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{cidr:?} is not a CIDR (a.b.c.d/n)"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| anyhow::anyhow!("{cidr:?}: {e}"))?;
    let bits: u32 = bits.parse().map_err(|e| anyhow::anyhow!("{cidr:?}: {e}"))?;
    anyhow::ensure!(
        (8..=30).contains(&bits),
        "{cidr:?}: prefix length must be 8..=30"
    );
    let mask = u32::MAX << (32 - bits);
    Ok((u32::from(ip) & mask, 1u32 << (32 - bits)))
}

fn has_spec_generation(res: &ResourceInfo) -> bool {
    matches!(res.kind, "Deployment" | "ReplicaSet")
}

/// Resources whose PUT creates a missing object, as Kubernetes allows for them.
fn create_on_update(res: &ResourceInfo) -> bool {
    matches!(res.kind, "Lease" | "Endpoints" | "EndpointSlice" | "Event")
}

fn conflict_msg() -> &'static str {
    "the object has been modified; please apply your changes to the latest version and try again"
}

impl Registry {
    /// A registry over `store`, with ClusterIPs taken from `service_cidr`.
    pub fn new(store: Arc<Store>, service_cidr: &str) -> anyhow::Result<Registry> {
        let caches = RESOURCES
            .iter()
            .map(|r| (r.plural, ResourceCache::new(r)))
            .collect();
        Ok(Registry {
            store,
            caches,
            service_net: parse_cidr(service_cidr)?,
        })
    }

    /// Starts feeding every watch cache from the store.
    pub fn start_caches(&self) {
        for cache in self.caches.values() {
            tokio::spawn(cache.clone().run(self.store.clone()));
        }
    }

    /// The watch cache of `res`.
    pub fn cache(&self, res: &ResourceInfo) -> &Arc<ResourceCache> {
        &self.caches[res.plural]
    }

    /// All watch caches.
    pub fn caches(&self) -> impl Iterator<Item = &Arc<ResourceCache>> {
        self.caches.values()
    }

    /// The first address of the service range: the `kubernetes` Service's.
    pub fn first_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.service_net.0 + 1)
    }

    /// One write transaction. A request carrying a fencing token ([`fence`]) also
    /// compares the mod_revision of the Lease it names, after checking that Lease still
    /// grants the token: the write commits only while its leader still leads. A
    /// transaction that failed only because the Lease was renewed meanwhile goes round
    /// again on the renewed Lease; the caller sees its own compares' outcome and its own
    /// failure responses, never the Lease's.
    async fn txn(&self, req: TxnRequest) -> ApiResult<TxnResponse> {
        let Some(fence) = fence::current() else {
            return Ok(self.store.txn(req).await?);
        };
        let leases = resources::lookup("coordination.k8s.io", "v1", "leases")
            .expect("leases are a served resource");
        let lease_key = objects::key(leases, &fence.namespace, &fence.name);
        // The first round trusts the watch cache (a stale Lease only costs a round: its
        // revision no longer matches); later rounds use the Lease the failed Txn returned.
        let mut lease: Option<(Option<Value>, i64)> = self
            .cache(leases)
            .get(&lease_key)
            .filter(|_| self.cache(leases).ready())
            .map(|c| (Some(c.object()), c.rev));
        for _ in 0..WRITE_ROUNDS {
            let (obj, rev) = match lease.take() {
                Some(l) => l,
                None => match self.store.get(&lease_key).await? {
                    (Some(kv), _) => (Some(objects::decode(&kv)?), kv.mod_revision),
                    (None, _) => (None, 0),
                },
            };
            fence.check(obj.as_ref())?;
            let mut guarded = req.clone();
            guarded.compare.push(cmp_mod(&lease_key, rev));
            guarded.failure.push(op_get(&lease_key));
            let mut resp = self.store.txn(guarded).await?;
            if resp.succeeded {
                return Ok(resp);
            }
            let now = match resp.responses.pop().and_then(|r| r.response) {
                Some(OpResp::ResponseRange(rr)) => rr.kvs.into_iter().next(),
                _ => None,
            };
            match now {
                Some(kv) if kv.mod_revision == rev => return Ok(resp),
                Some(kv) => lease = Some((Some(objects::decode(&kv)?), kv.mod_revision)),
                None => lease = Some((None, 0)),
            }
        }
        Err(ApiError::unavailable(format!(
            "lease {}/{} kept changing during the write; retry",
            fence.namespace, fence.name
        )))
    }

    // ---- reads ----

    /// One object, linearizably from the store.
    pub async fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        let key = objects::key(res, ns, name);
        match self.store.get(&key).await? {
            (Some(kv), _) => objects::decode(&kv),
            (None, _) => Err(ApiError::not_found(res.group, res.plural, name)),
        }
    }

    /// One object from the watch cache (`resourceVersion=0` reads).
    pub fn get_cached(&self, res: &ResourceInfo, ns: &str, name: &str) -> Option<Value> {
        let cache = self.cache(res);
        if !cache.ready() {
            return None;
        }
        cache.get(&objects::key(res, ns, name)).map(|c| c.object())
    }

    /// A list: from the watch cache when the request allows (no `limit`, or
    /// `resourceVersion` given), after making sure the cache is as fresh as the request
    /// needs; from the store at one revision for pages.
    pub async fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        filter: Option<Filter>,
        opts: &ListOpts,
    ) -> ApiResult<ListPage> {
        if !opts.continue_token.is_empty() {
            let (rev, start) = decode_continue(&opts.continue_token)?;
            return self
                .list_store(res, ns, filter, opts.limit, rev, start)
                .await;
        }
        let rv = objects::parse_rv(&opts.resource_version)?;
        if opts.exact {
            let Some(rev) = rv.filter(|r| *r > 0) else {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch=Exact needs a non-zero resourceVersion",
                ));
            };
            return self
                .list_store(res, ns, filter, opts.limit, rev, None)
                .await;
        }
        let cache = self.cache(res);
        let from_cache = match rv {
            Some(0) => cache.ready(),
            Some(r) => cache.wait_for(r, CACHE_WAIT).await.is_ok(),
            None if opts.limit > 0 => false,
            None => {
                let current = self.store.current_revision().await?;
                cache.wait_for(current, CACHE_WAIT).await.is_ok()
            }
        };
        if from_cache {
            let (items, rev) = cache.list(ns, filter.as_ref());
            return Ok(ListPage {
                items,
                resource_version: rev,
                continue_token: None,
            });
        }
        self.list_store(res, ns, filter, opts.limit, 0, None).await
    }

    async fn list_store(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        filter: Option<Filter>,
        limit: i64,
        mut rev: i64,
        start: Option<Vec<u8>>,
    ) -> ApiResult<ListPage> {
        let prefix = objects::prefix(res, ns);
        let end = skiff_proto::prefix_end(&prefix);
        let mut key = start.unwrap_or_else(|| prefix.clone());
        let mut items = Vec::new();
        let page = if limit > 0 { limit.min(10_000) } else { 1_000 };
        loop {
            let resp = self
                .store
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: page,
                    revision: rev,
                    ..Default::default()
                })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    other => other.into(),
                })?;
            if rev == 0 {
                rev = resp.header.as_ref().map_or(0, |h| h.revision);
            }
            let n = resp.kvs.len();
            for (i, kv) in resp.kvs.iter().enumerate() {
                let obj = objects::decode(kv)?;
                if filter.as_ref().is_some_and(|f| !f(&obj)) {
                    continue;
                }
                items.push(Arc::new(Cached::new(res, &obj)));
                if limit > 0 && items.len() as i64 >= limit {
                    let more = i + 1 < n || resp.more;
                    let mut next = kv.key.clone();
                    next.push(0);
                    let token = more.then(|| encode_continue(rev, &next));
                    return Ok(ListPage {
                        items,
                        resource_version: rev,
                        continue_token: token,
                    });
                }
            }
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    key = last.key.clone();
                    key.push(0);
                }
                _ => break,
            }
        }
        Ok(ListPage {
            items,
            resource_version: rev,
            continue_token: None,
        })
    }

    // ---- writes ----

    /// Checks a request body against the resource's type: kind and apiVersion, unknown
    /// fields per `fieldValidation`, and the typed decoding.
    fn prepare_body(
        &self,
        res: &ResourceInfo,
        mut body: Value,
        validation: FieldValidation,
    ) -> ApiResult<(Value, Vec<String>)> {
        if !body.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request must be a {} object",
                res.kind
            )));
        }
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if (!kind.is_empty() && kind != res.kind)
            || (!api_version.is_empty() && api_version != res.api_version())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
                res.api_version(),
                res.kind
            )));
        }
        body["kind"] = json!(res.kind);
        body["apiVersion"] = json!(res.api_version());
        let mut warnings = Vec::new();
        if validation != FieldValidation::Ignore {
            let unknown = crate::types::unknown_fields(res.group, res.kind, &body);
            if !unknown.is_empty() {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                if validation == FieldValidation::Strict {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        res.kind,
                        res.version,
                        res.kind,
                        list.join(", ")
                    )));
                }
                warnings = list;
            }
        }
        let name = meta_str(&body, "name").to_string();
        let obj = crate::types::decode(res.group, res.version, res.kind, &name, body)?;
        Ok((obj, warnings))
    }

    /// Creates an object in namespace `ns` ("" for cluster-scoped resources).
    pub async fn create(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        body: Value,
        opts: WriteOpts,
    ) -> ApiResult<Outcome> {
        let (mut obj, warnings) = self.prepare_body(res, body, opts.validation)?;
        {
            let meta = meta_mut(&mut obj);
            if res.namespaced {
                let given = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
                if !given.is_empty() && given != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                let gen = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if gen.is_empty() {
                    return Err(ApiError::invalid(
                        res.group,
                        res.kind,
                        "",
                        vec![FieldCause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
                meta.insert("name".into(), json!(format!("{gen}{}", random_suffix())));
            }
            if meta
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(ApiError::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(f);
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            if has_spec_generation(res) {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        prepare_for_create(res, &mut obj);
        validation::apply_defaults(res.group, res.kind, &mut obj);
        let name = meta_str(&obj, "name").to_string();
        let causes = validation::validate(res.group, res.kind, &obj, None);
        if !causes.is_empty() {
            return Err(ApiError::invalid(res.group, res.kind, &name, causes));
        }
        if res.namespaced {
            self.check_namespace_open(ns).await?;
        }
        let key = objects::key(res, ns, &name);
        let chosen_ip = res.kind == "Service" && service_ip(&obj).is_some();
        for _ in 0..WRITE_ROUNDS {
            let mut compares = vec![cmp_create(&key, 0)];
            let mut ops = vec![op_put(&key, Vec::new())];
            if res.kind == "Service" {
                if let Some(ip_key) = self.assign_cluster_ip(res, &mut obj, ns, &name)? {
                    compares.push(cmp_create(ip_key.as_bytes(), 0));
                    ops.push(op_put(
                        ip_key.as_bytes(),
                        format!("{ns}/{name}").into_bytes(),
                    ));
                }
            }
            if opts.dry_run {
                return Ok(Outcome {
                    object: obj,
                    warnings,
                    created: true,
                });
            }
            ops[0] = op_put(&key, objects::encode(&obj));
            let resp = self
                .txn(TxnRequest {
                    compare: compares,
                    success: ops,
                    failure: vec![op_get(&key)],
                })
                .await?;
            if resp.succeeded {
                let rev = resp.header.map_or(0, |h| h.revision);
                objects::set_resource_version(&mut obj, rev);
                return Ok(Outcome {
                    object: obj,
                    warnings,
                    created: true,
                });
            }
            let exists = resp.responses.iter().any(
                |r| matches!(&r.response, Some(OpResp::ResponseRange(rr)) if !rr.kvs.is_empty()),
            );
            if exists {
                return Err(ApiError::already_exists(res.group, res.plural, &name));
            }
            // The ClusterIP was taken meanwhile.
            if chosen_ip {
                let ip = service_ip(&obj).unwrap_or_default();
                return Err(ApiError::invalid(
                    res.group,
                    res.kind,
                    &name,
                    vec![FieldCause::invalid(
                        "spec.clusterIPs",
                        &json!([ip]),
                        &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    )],
                ));
            }
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
        Err(ApiError::internal(
            "could not allocate a ClusterIP: the range looks exhausted",
        ))
    }
}

/// The ClusterIP a Service asks for, if any (not `None`, not empty).
fn service_ip(obj: &Value) -> Option<String> {
    let ip = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    (!ip.is_empty() && ip != "None").then(|| ip.to_string())
}

fn is_headless_or_external(obj: &Value) -> bool {
    obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None")
        || obj.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName")
}

/// What Kubernetes's strategies reset on create.
fn prepare_for_create(res: &ResourceInfo, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match res.kind {
        "Pod" => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        "Deployment" | "ReplicaSet" => {
            map.insert("status".into(), json!({}));
        }
        "Service" => {
            map.insert("status".into(), json!({"loadBalancer": {}}));
        }
        "Namespace" => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        _ => {}
    }
}

/// Combines what a client sent with the stored object for an update of `part`.
fn merge_for_update(res: &ResourceInfo, part: Part, old: &Value, new: Value) -> Value {
    let mut merged = match part {
        Part::Status => {
            let mut m = old.clone();
            if let Some(status) = new.get("status") {
                m["status"] = status.clone();
            } else if let Some(o) = m.as_object_mut() {
                o.remove("status");
            }
            m
        }
        Part::Main | Part::Scale => {
            let mut m = new;
            if res.has_status() {
                match old.get("status") {
                    Some(s) => m["status"] = s.clone(),
                    None => {
                        if let Some(o) = m.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            m
        }
    };
    // Server-owned metadata always comes from the stored object.
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = meta_mut(&mut merged);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
        "selfLink",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    meta.remove("managedFields");
    if has_spec_generation(res) && part != Part::Status && old.get("spec") != merged.get("spec") {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut merged).insert("generation".into(), json!(g));
    }
    merged
}

/// Strips the resourceVersion for comparing an update with what is stored.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An `autoscaling/v1 Scale` view of a Deployment or ReplicaSet.
pub fn scale_of(res: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| crate::selector::LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let _ = res;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(obj, "name"),
            "namespace": meta_str(obj, "namespace"),
            "uid": meta_str(obj, "uid"),
            "resourceVersion": meta_str(obj, "resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Options of a delete (a `DeleteOptions` body and/or query parameters).
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    /// Reads a `DeleteOptions` JSON body over the query's values.
    pub fn merge_body(&mut self, body: &Value) -> ApiResult<()> {
        if body.is_null() {
            return Ok(());
        }
        let kind = body
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("DeleteOptions");
        if kind != "DeleteOptions" {
            return Err(ApiError::bad_request(format!(
                "expected a DeleteOptions body, got kind {kind:?}"
            )));
        }
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(p.to_string());
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && self.propagation.is_none()
        {
            self.propagation = Some("Orphan".into());
        }
        if let Some(u) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
            self.precondition_uid = Some(u.to_string());
        }
        if let Some(r) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            self.precondition_rv = Some(r.to_string());
        }
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            self.dry_run = true;
        }
        Ok(())
    }
}

/// What a delete did.
#[derive(Debug)]
pub struct Deleted {
    /// The object: gone (its last state), or marked for deletion and still present.
    pub object: Value,
    /// Whether it is gone from the store now.
    pub gone: bool,
}

impl Registry {
    async fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let nsres = resources::lookup("", "v1", "namespaces").expect("namespaces served");
        // The cached view holds deletionTimestamp and status.phase (a field-selector
        // path of namespaces): no need to parse the whole object on every create.
        let cache = self.cache(nsres);
        let cached = cache
            .ready()
            .then(|| cache.get(&objects::key(nsres, "", ns)))
            .flatten();
        let obj = match cached {
            Some(c) => c.view.clone(),
            None => match self.get(nsres, "", ns).await {
                Ok(o) => o,
                Err(e) if e.code == 404 => return Err(ApiError::not_found("", "namespaces", ns)),
                Err(e) => return Err(e),
            },
        };
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    /// Gives a Service its ClusterIP (unless headless or ExternalName) and returns the
    /// store key that records the address as taken.
    fn assign_cluster_ip(
        &self,
        res: &ResourceInfo,
        obj: &mut Value,
        ns: &str,
        name: &str,
    ) -> ApiResult<Option<String>> {
        if is_headless_or_external(obj) {
            return Ok(None);
        }
        let (base, size) = self.service_net;
        let ip = match service_ip(obj) {
            Some(ip) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    ApiError::invalid(
                        res.group,
                        res.kind,
                        name,
                        vec![FieldCause::invalid(
                            "spec.clusterIPs[0]",
                            &json!(ip),
                            "must be a valid IP address",
                        )],
                    )
                })?;
                let n = u32::from(parsed);
                if n <= base || n >= base + size - 1 {
                    let range = format!("{}/{}", Ipv4Addr::from(base), 32 - size.trailing_zeros());
                    return Err(ApiError::invalid(res.group, res.kind, name, vec![FieldCause::invalid(
                        "spec.clusterIPs",
                        &json!([ip]),
                        &format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"),
                    )]));
                }
                parsed
            }
            None => {
                let taken: std::collections::HashSet<String> = self
                    .cache(res)
                    .list(None, None)
                    .0
                    .iter()
                    .filter_map(|s| service_ip(&s.view))
                    .collect();
                let mut rng = rand::rng();
                let mut pick = None;
                for _ in 0..64 {
                    // .1 is the `kubernetes` Service's; the last address is broadcast.
                    let n = base + rng.random_range(2..size - 1);
                    let ip = Ipv4Addr::from(n);
                    if !taken.contains(&ip.to_string()) {
                        pick = Some(ip);
                        break;
                    }
                }
                pick.ok_or_else(|| {
                    ApiError::internal("no free ClusterIP found in the service range")
                })?
            }
        };
        let _ = ns;
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!(ip.to_string()));
            spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        }
        Ok(Some(format!("{SERVICE_IP_PREFIX}{ip}")))
    }

    /// Replaces an object (PUT), or its status or scale.
    pub async fn update(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        body: Value,
        opts: WriteOpts,
    ) -> ApiResult<Outcome> {
        let (new, warnings, precondition) = if part == Part::Scale {
            let rv = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (body, Vec::new(), rv)
        } else {
            let (new, warnings) = self.prepare_body(res, body, opts.validation)?;
            let rv = meta_str(&new, "resourceVersion").to_string();
            (new, warnings, rv)
        };
        // A PUT may leave the name out; when given it must be the URL's.
        if !meta_str(&new, "name").is_empty() {
            check_url_name(&new, name)?;
        }
        let precondition = objects::parse_rv(&precondition)?;
        let key = objects::key(res, ns, name);
        for _ in 0..WRITE_ROUNDS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                if create_on_update(res) && part == Part::Main {
                    let mut body = new.clone();
                    meta_mut(&mut body).remove("resourceVersion");
                    return self.create(res, ns, body, opts).await;
                }
                return Err(ApiError::not_found(res.group, res.plural, name));
            };
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    conflict_msg(),
                ));
            }
            let old = objects::decode(&kv)?;
            let candidate = if part == Part::Scale {
                with_replicas(res, &old, scale_replicas(&new)?)
            } else {
                merge_for_update(res, part, &old, new.clone())
            };
            let written = self
                .write_update(res, &key, kv.mod_revision, &old, candidate, part, opts)
                .await?;
            if let Some(done) =
                round_outcome(res, name, part, written, precondition.is_some(), &warnings)
            {
                return done;
            }
        }
        Err(too_many_writers(res, name))
    }

    /// Defaults, validates and writes `candidate` over `old` if `old` is still the stored
    /// version. `None` when it is not (someone else wrote in between).
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        res: &'static ResourceInfo,
        key: &[u8],
        old_rev: i64,
        old: &Value,
        mut candidate: Value,
        part: Part,
        opts: WriteOpts,
    ) -> ApiResult<Option<Value>> {
        validation::prepare_update(res.group, res.kind, &mut candidate, old);
        validation::apply_defaults(res.group, res.kind, &mut candidate);
        let name = meta_str(old, "name").to_string();
        let causes = if part == Part::Status {
            validation::validate_status(res.group, res.kind, &candidate, old)
        } else {
            validation::validate(res.group, res.kind, &candidate, Some(old))
        };
        if !causes.is_empty() {
            return Err(ApiError::invalid(res.group, res.kind, &name, causes));
        }
        if same_object(&candidate, old) {
            return Ok(Some(old.clone()));
        }
        if opts.dry_run {
            return Ok(Some(candidate));
        }
        // The last finalizer of an object being deleted is gone: the object goes.
        let finished = candidate.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&candidate).is_empty()
            && !(res.kind == "Pod"
                && candidate.pointer("/spec/nodeName").is_some()
                && candidate
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0);
        let mut success = vec![if finished {
            op_delete(key)
        } else {
            op_put(key, objects::encode(&candidate))
        }];
        if finished {
            if let Some(ip) = res.kind.eq("Service").then(|| service_ip(old)).flatten() {
                success.push(op_delete(format!("{SERVICE_IP_PREFIX}{ip}").as_bytes()));
            }
        }
        let resp = self
            .txn(TxnRequest {
                compare: vec![cmp_mod(key, old_rev)],
                success,
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Ok(None);
        }
        let rev = resp.header.map_or(0, |h| h.revision);
        objects::set_resource_version(&mut candidate, rev);
        Ok(Some(candidate))
    }

    /// Patches an object (or its status or scale).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        patch_type: PatchType,
        body: &[u8],
        opts: WriteOpts,
    ) -> ApiResult<Outcome> {
        let key = objects::key(res, ns, name);
        for _ in 0..WRITE_ROUNDS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found(res.group, res.plural, name));
            };
            let old = objects::decode(&kv)?;
            let (view, group, kind) = if part == Part::Scale {
                (scale_of(res, &old), "autoscaling", "Scale")
            } else {
                (old.clone(), res.group, res.kind)
            };
            let patched = patch::apply(patch_type, group, kind, &view, body)?;
            let given_rv = patched
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // Only a resourceVersion the patch itself sets is a precondition: the one the
            // patched object carries over from the stored object is not, so a patch
            // without one retries when it loses a race (as Kubernetes's does).
            let carried = view
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let precondition = if given_rv == carried {
                None
            } else {
                objects::parse_rv(&given_rv)?
            };
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    conflict_msg(),
                ));
            }
            let (candidate, warnings) = if part == Part::Scale {
                (
                    with_replicas(res, &old, scale_replicas(&patched)?),
                    Vec::new(),
                )
            } else {
                let (new, warnings) = self.prepare_body(res, patched, opts.validation)?;
                check_url_name(&new, name)?;
                (merge_for_update(res, part, &old, new), warnings)
            };
            let written = self
                .write_update(res, &key, kv.mod_revision, &old, candidate, part, opts)
                .await?;
            if let Some(done) =
                round_outcome(res, name, part, written, precondition.is_some(), &warnings)
            {
                return done;
            }
        }
        Err(too_many_writers(res, name))
    }

    /// Deletes an object, honouring grace periods, finalizers and the propagation policy:
    /// an object with finalizers (or a pod on a node, given a grace period) is marked with
    /// a deletionTimestamp and stays until they are done; otherwise it goes now.
    pub async fn delete(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Deleted> {
        let key = objects::key(res, ns, name);
        if res.kind == "Namespace" && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespace \"{name}\" is forbidden: this namespace may not be deleted"),
            )
            .with_details("", "namespaces", name));
        }
        if let Some(p) = &opts.propagation {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    vec![FieldCause::not_supported(
                        "propagationPolicy",
                        &json!(p),
                        &["Foreground", "Background", "Orphan"],
                    )],
                ));
            }
        }
        if opts.grace_period.is_some_and(|g| g < 0) {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![FieldCause::invalid(
                    "gracePeriodSeconds",
                    &json!(opts.grace_period),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        for _ in 0..WRITE_ROUNDS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found(res.group, res.plural, name));
            };
            let old = objects::decode(&kv)?;
            if let Some(uid) = &opts.precondition_uid {
                let actual = meta_str(&old, "uid");
                if uid != actual {
                    return Err(ApiError::conflict(res.group, res.plural, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if let Some(rv) = &opts.precondition_rv {
                if rv != &kv.mod_revision.to_string() {
                    return Err(ApiError::conflict(res.group, res.plural, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    )));
                }
            }
            let mut fins = finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                _ => {}
            }
            let bound_pod = res.kind == "Pod"
                && old
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && !matches!(
                    old.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
            let grace = match opts.grace_period {
                Some(g) => g,
                None if bound_pod => old
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30),
                None => 0,
            };
            let being_deleted = old.pointer("/metadata/deletionTimestamp").is_some();
            let namespace_spec_finalizers = res.kind == "Namespace"
                && old
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
            let graceful = bound_pod && grace > 0;
            if fins.is_empty() && !graceful && !namespace_spec_finalizers {
                if opts.dry_run {
                    return Ok(Deleted {
                        object: old,
                        gone: true,
                    });
                }
                let mut success = vec![op_delete(&key)];
                if res.kind == "Service" {
                    if let Some(ip) = service_ip(&old) {
                        success.push(op_delete(format!("{SERVICE_IP_PREFIX}{ip}").as_bytes()));
                    }
                }
                let resp = self
                    .txn(TxnRequest {
                        compare: vec![cmp_mod(&key, kv.mod_revision)],
                        success,
                        failure: vec![],
                    })
                    .await?;
                if !resp.succeeded {
                    continue;
                }
                let mut last = old;
                objects::set_resource_version(&mut last, resp.header.map_or(0, |h| h.revision));
                return Ok(Deleted {
                    object: last,
                    gone: true,
                });
            }
            // Marked for deletion; finalizers, the node agent or the namespace
            // controller finish it.
            let mut marked = old.clone();
            {
                let meta = meta_mut(&mut marked);
                let shorten = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_none_or(|g| grace < g);
                if !being_deleted || (graceful && shorten) {
                    let at = jiff::Timestamp::now().as_second() + if graceful { grace } else { 0 };
                    let at = jiff::Timestamp::from_second(at)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| now_rfc3339());
                    meta.insert("deletionTimestamp".into(), json!(at));
                    meta.insert(
                        "deletionGracePeriodSeconds".into(),
                        json!(if graceful { grace } else { 0 }),
                    );
                }
                if !fins.is_empty() {
                    meta.insert("finalizers".into(), json!(fins));
                }
            }
            if res.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            if same_object(&marked, &old) || opts.dry_run {
                return Ok(Deleted {
                    object: marked,
                    gone: false,
                });
            }
            let resp = self
                .txn(TxnRequest {
                    compare: vec![cmp_mod(&key, kv.mod_revision)],
                    success: vec![op_put(&key, objects::encode(&marked))],
                    failure: vec![],
                })
                .await?;
            if !resp.succeeded {
                continue;
            }
            objects::set_resource_version(&mut marked, resp.header.map_or(0, |h| h.revision));
            return Ok(Deleted {
                object: marked,
                gone: false,
            });
        }
        Err(too_many_writers(res, name))
    }

    /// Binds a pending pod to a node (`pods/binding`): refused with 409 if the pod is
    /// already bound, so two schedulers can never place one pod twice.
    pub async fn bind(&self, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
        let pods = resources::lookup("", "v1", "pods").expect("pods served");
        let binding = crate::types::decode("", "v1", "Binding", name, body)?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![FieldCause::required("target.name", "")],
            ));
        }
        let key = objects::key(pods, ns, name);
        for _ in 0..WRITE_ROUNDS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found("", "pods", name));
            };
            let mut pod = objects::decode(&kv)?;
            if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str) {
                if !uid.is_empty() && uid != meta_str(&pod, "uid") {
                    return Err(ApiError::conflict(
                        "",
                        "pods",
                        name,
                        "the UID in the binding does not match the pod",
                    ));
                }
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let bound = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !bound.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{bound}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let conds = pod["status"]
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
            pod["status"]["conditions"] = json!(conds);
            let resp = self
                .txn(TxnRequest {
                    compare: vec![cmp_mod(&key, kv.mod_revision)],
                    success: vec![op_put(&key, objects::encode(&pod))],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                return Ok(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                );
            }
        }
        Err(too_many_writers(pods, name))
    }

    /// Creates what every cluster has from the start: the `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease` namespaces and the `kubernetes` Service.
    /// Idempotent; safe to run on every API server at every start.
    pub async fn bootstrap(&self) -> ApiResult<()> {
        let nsres = resources::lookup("", "v1", "namespaces").expect("namespaces served");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(nsres, "", body, WriteOpts::default()).await {
                Ok(_) => tracing::info!(namespace = ns, "created namespace"),
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        let svc = resources::lookup("", "v1", "services").expect("services served");
        let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": self.first_service_ip().to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        match self
            .create(svc, "default", body, WriteOpts::default())
            .await
        {
            Ok(_) | Err(ApiError { code: 409, .. }) => Ok(()),
            Err(e) if e.code == 422 && e.message.contains("already allocated") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Compacts the store's history every `interval`, as kube-apiserver does: API servers
    /// agree through a compare-and-swap on one key, so each interval compacts once,
    /// up to the revision seen one interval earlier (history younger than that is kept
    /// for watches and continue tokens).
    pub async fn run_compactor(self: Arc<Self>, interval: Duration) {
        let mut target = 0i64;
        loop {
            tokio::time::sleep(interval).await;
            let res = async {
                let (kv, rev) = self.store.get(COMPACT_KEY).await?;
                let version = kv.as_ref().map_or(0, |k| k.version);
                let cmp = skiff_proto::etcdserverpb::Compare {
                    result: 0,
                    target: 0, // VERSION
                    key: COMPACT_KEY.to_vec(),
                    target_union: Some(skiff_proto::etcdserverpb::compare::TargetUnion::Version(
                        version,
                    )),
                    range_end: vec![],
                };
                let resp = self
                    .store
                    .txn(TxnRequest {
                        compare: vec![cmp],
                        success: vec![op_put(COMPACT_KEY, rev.to_string().into_bytes())],
                        failure: vec![],
                    })
                    .await?;
                if resp.succeeded && target > 0 {
                    self.store.compact(target).await?;
                    tracing::info!(revision = target, "compacted store history");
                }
                Ok::<i64, StoreError>(rev)
            }
            .await;
            match res {
                Ok(rev) => target = rev,
                Err(StoreError::Compacted) => {}
                Err(e) => tracing::warn!(error = %e, "compaction round failed"),
            }
        }
    }
}

/// `old` with `spec.replicas` set: what a write through `/scale` makes of the object.
fn with_replicas(res: &ResourceInfo, old: &Value, replicas: i64) -> Value {
    let mut m = old.clone();
    m["spec"]["replicas"] = json!(replicas);
    merge_for_update(res, Part::Main, old, m)
}

/// What one round of an update or patch came to: `Some` when it is over (written, or a
/// conflict the client must see because it named a resourceVersion), `None` to go round
/// again on the fresh object.
fn round_outcome(
    res: &ResourceInfo,
    name: &str,
    part: Part,
    written: Option<Value>,
    client_precondition: bool,
    warnings: &[String],
) -> Option<ApiResult<Outcome>> {
    match written {
        Some(obj) => {
            let object = if part == Part::Scale {
                scale_of(res, &obj)
            } else {
                obj
            };
            Some(Ok(Outcome {
                object,
                warnings: warnings.to_vec(),
                created: false,
            }))
        }
        None if client_precondition => Some(Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            conflict_msg(),
        ))),
        None => None,
    }
}

/// A body's `metadata.name` must be the name in the URL.
fn check_url_name(body: &Value, url_name: &str) -> ApiResult<()> {
    let body_name = meta_str(body, "name");
    if body_name == url_name {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
    )))
}

fn too_many_writers(res: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        res.group,
        res.plural,
        name,
        "too many concurrent writers; try again",
    )
}

fn scale_replicas(scale: &Value) -> ApiResult<i64> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            meta_str(scale, "name"),
            vec![FieldCause::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    Ok(replicas)
}

fn encode_continue(rev: i64, next_key: &[u8]) -> String {
    let token = json!({"v": "skiff.v1", "rv": rev, "start": base64::engine::general_purpose::STANDARD.encode(next_key)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, Option<Vec<u8>>)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let start = base64::engine::general_purpose::STANDARD
        .decode(start)
        .map_err(|_| bad())?;
    Ok((rev, Some(start)))
}

impl Registry {
    /// `PUT namespaces/<name>/finalize`: replaces `spec.finalizers` (the namespace
    /// controller's hand-off). A terminating namespace with no finalizers left is deleted.
    pub async fn finalize_namespace(&self, name: &str, body: Value) -> ApiResult<Value> {
        let nsres = resources::lookup("", "v1", "namespaces").expect("namespaces served");
        let key = objects::key(nsres, "", name);
        let wanted = body
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        if !wanted.is_array() {
            return Err(ApiError::bad_request("spec.finalizers must be a list"));
        }
        for _ in 0..WRITE_ROUNDS {
            let (kv, _) = self.store.get(&key).await?;
            let Some(kv) = kv else {
                return Err(ApiError::not_found("", "namespaces", name));
            };
            let mut ns = objects::decode(&kv)?;
            ns["spec"]["finalizers"] = wanted.clone();
            let done = ns.pointer("/metadata/deletionTimestamp").is_some()
                && wanted.as_array().is_some_and(|a| a.is_empty())
                && finalizers(&ns).is_empty();
            let op = if done {
                op_delete(&key)
            } else {
                op_put(&key, objects::encode(&ns))
            };
            let resp = self
                .txn(TxnRequest {
                    compare: vec![cmp_mod(&key, kv.mod_revision)],
                    success: vec![op],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                objects::set_resource_version(&mut ns, resp.header.map_or(0, |h| h.revision));
                return Ok(ns);
            }
        }
        Err(too_many_writers(nsres, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_tokens() {
        let (base, size) = parse_cidr("10.96.0.0/12").unwrap();
        assert_eq!(Ipv4Addr::from(base), Ipv4Addr::new(10, 96, 0, 0));
        assert_eq!(size, 1 << 20);
        assert!(parse_cidr("10.96.0.0").is_err());
        let t = encode_continue(42, b"/registry/pods/a/b\0");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, Some(b"/registry/pods/a/b\0".to_vec()))
        );
        assert_eq!(decode_continue("garbage!").unwrap_err().code, 400);
    }

    #[test]
    fn update_keeps_server_fields_and_bumps_generation() {
        let dep = resources::lookup("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "namespace": "n", "uid": "u1", "generation": 3, "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "forged", "labels": {"a": "b"}}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        let m = merge_for_update(dep, Part::Main, &old, new);
        assert_eq!(m["metadata"]["uid"], "u1");
        assert_eq!(m["metadata"]["generation"], 4);
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        assert_eq!(
            m["status"]["replicas"], 1,
            "status ignored on the main resource"
        );
        let s = merge_for_update(
            dep,
            Part::Status,
            &old,
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 7}, "status": {"replicas": 5}}),
        );
        assert_eq!(s["spec"]["replicas"], 1, "spec ignored on status");
        assert_eq!(s["status"]["replicas"], 5);
        assert_eq!(s["metadata"]["generation"], 3);
    }
}
