//! Finishing namespace deletion: a terminating namespace's contents are deleted, then its
//! `kubernetes` finalizer is removed and the namespace goes.
//!
//! This is the namespace controller's job in Kubernetes. It runs here, on every API
//! server, until the controller manager exists; it is idempotent, so replicas racing
//! on the same namespace only repeat each other's deletes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::objects::meta_str;
use crate::registry::{DeleteOpts, ListOpts, Registry};
use crate::resources::{self, RESOURCES};

/// How often terminating namespaces are looked at.
const EVERY: Duration = Duration::from_millis(500);

/// Runs until the process ends.
pub async fn run(registry: Arc<Registry>) {
    let nsres = resources::lookup("", "v1", "namespaces").expect("namespaces served");
    loop {
        tokio::time::sleep(EVERY).await;
        let cache = registry.cache(nsres);
        if !cache.ready() {
            continue;
        }
        let (all, _) = cache.list(None, None);
        for ns in all
            .iter()
            .filter(|n| n.view.pointer("/metadata/deletionTimestamp").is_some())
        {
            let name = meta_str(&ns.view, "name").to_string();
            if let Err(e) = finish(&registry, &name).await {
                tracing::debug!(namespace = %name, error = %e, "namespace not finished yet");
            }
        }
    }
}

/// One round on one terminating namespace: deletes what is left in it; once it is empty,
/// clears the finalizer.
async fn finish(registry: &Registry, ns: &str) -> Result<(), crate::error::ApiError> {
    let mut remaining = 0;
    let opts = DeleteOpts {
        propagation: Some("Background".into()),
        ..Default::default()
    };
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let page = registry
            .list(
                res,
                Some(ns),
                None,
                &ListOpts {
                    resource_version: "0".into(),
                    ..Default::default()
                },
            )
            .await?;
        for obj in page.items {
            remaining += 1;
            if obj.view.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            match registry
                .delete(res, ns, meta_str(&obj.view, "name"), &opts)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining == 0 {
        let body: Value = json!({"spec": {"finalizers": []}});
        registry.finalize_namespace(ns, body).await?;
        tracing::info!(namespace = ns, "namespace deleted");
    }
    Ok(())
}
