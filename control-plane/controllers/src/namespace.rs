//! The namespace controller: a namespace being deleted has its contents deleted, then its
//! `kubernetes` finalizer removed, after which the API server deletes it.
//!
//! What "contents" means comes from discovery (every namespaced resource that can be
//! listed and deleted), so a resource the API server learns to serve is covered without a
//! change here. Pods bound to nodes leave only when their node agent confirms they
//! stopped, so a namespace with running pods finishes once they are gone — as in
//! Kubernetes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;

use crate::Context;

/// How often terminating namespaces are looked at again while they have contents.
const RETRY: Duration = Duration::from_secs(2);
/// How long a discovery result is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// Runs the namespace controller until the task is aborted.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    let mut changes = Box::pin(
        reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .touched_objects(),
    );
    let mut kinds: Option<(Instant, Vec<ApiResource>)> = None;
    let mut last_try: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            ev = changes.next() => match ev {
                Some(Ok(ns)) if ns.metadata.deletion_timestamp.is_some() => {
                    last_try.remove(&ns.name_any());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "namespace watch");
                    continue;
                }
                None => anyhow::bail!("namespace watch ended"),
            },
            _ = tick.tick() => {}
        }
        let terminating: Vec<_> = store
            .state()
            .into_iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_some())
            .collect();
        last_try.retain(|n, _| terminating.iter().any(|ns| &ns.name_any() == n));
        for ns in terminating {
            let name = ns.name_any();
            if last_try.get(&name).is_some_and(|t| t.elapsed() < RETRY / 2) {
                continue;
            }
            last_try.insert(name.clone(), Instant::now());
            let fresh = kinds
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < DISCOVERY_TTL);
            if !fresh {
                match namespaced_kinds(&ctx.client).await {
                    Ok(k) => kinds = Some((Instant::now(), k)),
                    Err(e) => {
                        tracing::warn!(error = %e, "discovery failed");
                        continue;
                    }
                }
            }
            let Some((_, kinds)) = kinds.as_ref() else {
                continue;
            };
            match finish(&ctx, &api, &name, kinds).await {
                Ok(true) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(namespace = %name, error = %e, "namespace not finished yet")
                }
            }
        }
    }
}

/// Every namespaced resource that can be listed and deleted.
async fn namespaced_kinds(client: &kube::Client) -> anyhow::Result<Vec<ApiResource>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE)
                && !ar.plural.contains('/')
            {
                out.push(ar);
            }
        }
    }
    Ok(out)
}

/// One round on one terminating namespace: deletes what is left in it; once nothing is
/// left, clears the `kubernetes` finalizer. Returns whether it was finalized.
async fn finish(
    ctx: &Context,
    namespaces: &Api<Namespace>,
    ns: &str,
    kinds: &[ApiResource],
) -> anyhow::Result<bool> {
    let mut remaining = 0usize;
    for ar in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
        let list = api.list_metadata(&ListParams::default()).await?;
        if list.items.is_empty() {
            continue;
        }
        remaining += list.items.len();
        if list
            .items
            .iter()
            .any(|o| o.metadata.deletion_timestamp.is_none())
        {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await?;
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    let mut current = namespaces.get(ns).await?;
    let spec = current.spec.get_or_insert_with(NamespaceSpec::default);
    if spec.finalizers.as_ref().is_none_or(|f| f.is_empty()) {
        return Ok(true);
    }
    spec.finalizers = Some(
        spec.finalizers
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != "kubernetes")
            .collect(),
    );
    namespaces
        .replace_subresource("finalize", ns, &PostParams::default(), &current)
        .await?;
    Ok(true)
}
