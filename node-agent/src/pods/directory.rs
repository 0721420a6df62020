//! What the agent's HTTP endpoint needs to find a container by pod and name: the pod
//! workers publish each container's current and previous attempt here after every sync.

use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::runtime::PodRef;
use crate::server::{ContainerLog, LookupError, PodLookup};

/// One container as published by its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Container name.
    pub name: String,
    /// Current attempt: runtime id, number, still running.
    pub current: Option<(String, u32, bool)>,
    /// The previous attempt's number.
    pub previous: Option<u32>,
}

struct Entry {
    pod: PodRef,
    containers: HashMap<String, (Published, watch::Sender<bool>)>,
}

/// Pods of this node by namespace and name.
pub struct Directory {
    log_root: PathBuf,
    runc: Option<crate::runtime::runc::Runc>,
    pods: RwLock<HashMap<(String, String), Entry>>,
}

impl Directory {
    /// A directory whose logs live under `log_root`; `runc` runs exec sessions.
    pub fn new(log_root: PathBuf, runc: Option<crate::runtime::runc::Runc>) -> Directory {
        Directory {
            log_root,
            runc,
            pods: RwLock::new(HashMap::new()),
        }
    }

    /// Where containers' logs go.
    pub fn log_root(&self) -> &std::path::Path {
        &self.log_root
    }

    /// Records the state of a pod's containers (cheap when nothing changed).
    pub fn publish(&self, pod: &PodRef, containers: Vec<Published>) {
        let key = (pod.namespace.clone(), pod.name.clone());
        let mut g = self.pods.write();
        let entry = g.entry(key).or_insert_with(|| Entry {
            pod: pod.clone(),
            containers: HashMap::new(),
        });
        if entry.pod.uid != pod.uid {
            // A new pod of the same name replaced the old one.
            entry.pod = pod.clone();
            entry.containers.clear();
        }
        for c in containers {
            let running = c.current.as_ref().is_some_and(|x| x.2);
            match entry.containers.get_mut(&c.name) {
                Some((old, tx)) => {
                    let new_attempt =
                        old.current.as_ref().map(|x| x.1) != c.current.as_ref().map(|x| x.1);
                    if new_attempt {
                        // Followers of the old attempt are done.
                        let _ = tx.send(true);
                        *tx = watch::channel(!running).0;
                    } else if !running {
                        let _ = tx.send(true);
                    }
                    *old = c;
                }
                None => {
                    let tx = watch::channel(!running).0;
                    entry.containers.insert(c.name.clone(), (c, tx));
                }
            }
        }
    }

    /// Forgets a pod (its followers end).
    pub fn remove(&self, pod: &PodRef) {
        let key = (pod.namespace.clone(), pod.name.clone());
        let mut g = self.pods.write();
        if g.get(&key).is_some_and(|e| e.pod.uid == pod.uid) {
            g.remove(&key);
        }
    }

    fn find<T>(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        f: impl FnOnce(&PodRef, &Published, &watch::Sender<bool>) -> Result<T, LookupError>,
    ) -> Result<T, LookupError> {
        let g = self.pods.read();
        let entry = g
            .get(&(namespace.to_owned(), pod.to_owned()))
            .ok_or_else(|| {
                LookupError::NotFound(format!("pod {namespace}/{pod} is not running on this node"))
            })?;
        let (c, tx) = entry.containers.get(container).ok_or_else(|| {
            LookupError::NotFound(format!("container {container} is not valid for pod {pod}"))
        })?;
        f(&entry.pod, c, tx)
    }
}

impl PodLookup for Directory {
    fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLog, LookupError> {
        self.find(namespace, pod, container, |p, c, tx| {
            let path = |attempt| {
                crate::logs::container_log_path(&self.log_root, &p.namespace, &p.name, &p.uid, container, attempt)
            };
            if previous {
                let n = c.previous.ok_or_else(|| {
                    LookupError::BadRequest(format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ))
                })?;
                return Ok(ContainerLog {
                    path: path(n),
                    running: false,
                    exited: None,
                });
            }
            let (_, attempt, running) = c.current.clone().ok_or_else(|| {
                LookupError::BadRequest(format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                ))
            })?;
            Ok(ContainerLog {
                path: path(attempt),
                running,
                exited: Some(tx.subscribe()),
            })
        })
    }

    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<tokio::process::Command, LookupError> {
        let runc = self
            .runc
            .as_ref()
            .ok_or_else(|| LookupError::BadRequest("this node runs no real containers".into()))?;
        if cmd.is_empty() {
            return Err(LookupError::BadRequest(
                "you must specify at least one command for the container".into(),
            ));
        }
        self.find(namespace, pod, container, |_, c, _| match &c.current {
            Some((id, _, true)) => Ok(runc.exec_command(id, cmd, tty)),
            _ => Err(LookupError::BadRequest(format!(
                "unable to upgrade connection: container not found (\"{container}\")"
            ))),
        })
    }
}
