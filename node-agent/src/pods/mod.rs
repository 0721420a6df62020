//! The pods of this node: a watch on pods with `spec.nodeName` = this node, one
//! [`worker::Worker`] task per pod uid, adoption of what the runtime already runs, and
//! cleanup of pods deleted while the agent was down.

pub mod directory;
pub mod probe;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::runtime::{PodRef, Runtime};
pub use worker::Shared;

struct Handle {
    pod: watch::Sender<Option<Arc<Pod>>>,
    wake: mpsc::UnboundedSender<()>,
}

/// Runs the pod workers of this node until `shutdown`. Workers are not stopped on
/// shutdown: containers keep running and the next agent adopts them.
///
/// `exits` carries the pods whose container ended (from the runtime's shims).
///
/// # Errors
/// Never in practice: the watch retries with back-off.
pub async fn run<R: Runtime>(
    sh: Arc<Shared<R>>,
    mut exits: mpsc::UnboundedReceiver<PodRef>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(sh.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", sh.node_name));
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(
        watcher::watcher(api, config)
    ));
    let mut workers: HashMap<String, Handle> = HashMap::new();
    // Records of what runs (adoption) and sandboxes (cleanup), read once at start.
    let mut records = sh.rt.records();
    let mut seen_in_init: std::collections::HashSet<String> = Default::default();
    let mut synced = false;
    let spawn = |workers: &mut HashMap<String, Handle>,
                 pod: Arc<Pod>,
                 records: &mut Vec<crate::runtime::Record>| {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(h) = workers.get(&uid) {
            let _ = h.pod.send(Some(pod));
            return;
        }
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.pod.uid == uid)
            .cloned()
            .collect();
        records.retain(|r| r.pod.uid != uid);
        let (ptx, prx) = watch::channel(Some(pod.clone()));
        let (wtx, wrx) = mpsc::unbounded_channel();
        let worker = worker::Worker::new(sh.clone(), pod, mine, wtx.clone());
        tokio::spawn(worker.run(prx, wrx));
        workers.insert(
            uid,
            Handle {
                pod: ptx,
                wake: wtx,
            },
        );
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(pod) = exits.recv() => {
                if let Some(h) = workers.get(&pod.uid) {
                    let _ = h.wake.send(());
                }
            }
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                        if !synced {
                            seen_in_init.insert(p.metadata.uid.clone().unwrap_or_default());
                        }
                        spawn(&mut workers, Arc::new(p), &mut records);
                    }
                    Ok(Event::Delete(p)) => {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        if let Some(h) = workers.remove(&uid) {
                            let _ = h.pod.send(None);
                        }
                    }
                    Ok(Event::Init) => {
                        seen_in_init.clear();
                    }
                    Ok(Event::InitDone) => {
                        // Pods that vanished while we were not watching: stop workers of
                        // uids not listed, and clean up sandboxes nobody owns.
                        let gone: Vec<String> = workers.keys().filter(|u| !seen_in_init.contains(*u)).cloned().collect();
                        for uid in gone {
                            if let Some(h) = workers.remove(&uid) {
                                let _ = h.pod.send(None);
                            }
                        }
                        if !synced {
                            synced = true;
                            for orphan in sh.rt.sandboxes().into_iter().filter(|p| !seen_in_init.contains(&p.uid)) {
                                tracing::info!(pod = %orphan.name, namespace = %orphan.namespace, uid = %orphan.uid, "cleaning up a pod deleted while the agent was away");
                                let sh = sh.clone();
                                tokio::spawn(async move { cleanup_orphan(&sh, orphan).await });
                            }
                            records.clear();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch"),
                }
            }
        }
    }
}

async fn cleanup_orphan<R: Runtime>(sh: &Shared<R>, pod: PodRef) {
    for r in sh.rt.records().into_iter().filter(|r| r.pod.uid == pod.uid) {
        sh.rt
            .stop(&pod, &r.id, std::time::Duration::from_secs(2))
            .await;
    }
    if let Err(e) = sh.rt.teardown_sandbox(&pod).await {
        tracing::warn!(pod = %pod.name, error = %format!("{e:#}"), "cleaning up an orphaned pod");
    }
    let logs = crate::logs::container_log_dir(&sh.log_root, &pod.namespace, &pod.name, &pod.uid);
    let _ = tokio::fs::remove_dir_all(logs).await;
}
