//! The simulated runtime (`--simulate`): no processes, no namespaces. Sandboxes get
//! addresses from the node's podCIDR, containers run from the moment they start and
//! never exit on their own (a stop ends them with 0, or 137 when the grace period was
//! zero), exec probes succeed. Everything else — registration, leases, the pod workers,
//! status — is the real agent's code, so a simulated node loads the control plane as a
//! real one does (kubemark's hollow nodes).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Result};
use parking_lot::Mutex;

use super::{ExecOutput, PodRef, Record, Running, Runtime, StartError, StartRequest, State};
use crate::shim::Exited;

/// In-memory pods and containers of one simulated node.
pub struct SimRuntime {
    base: u32,
    size: u32,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u32,
    ips: HashMap<String, Ipv4Addr>,
    containers: HashMap<String, Option<Exited>>,
}

impl SimRuntime {
    /// A runtime handing out addresses from `cidr` (e.g. `10.244.7.0/24`).
    ///
    /// # Errors
    /// If the CIDR does not parse.
    pub fn new(cidr: &str) -> Result<SimRuntime> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("podCIDR {cidr:?} is not a CIDR"))?;
        let addr: Ipv4Addr = addr.parse()?;
        let len: u32 = len.parse()?;
        if len > 30 {
            bail!("podCIDR {cidr} is too small");
        }
        Ok(SimRuntime {
            base: u32::from(addr),
            size: 1 << (32 - len),
            inner: Mutex::new(Inner::default()),
        })
    }
}

impl Runtime for SimRuntime {
    async fn setup_sandbox(&self, pod: &PodRef) -> Result<Ipv4Addr> {
        let mut g = self.inner.lock();
        if let Some(ip) = g.ips.get(&pod.uid) {
            return Ok(*ip);
        }
        // .0 network, .1 gateway; wrap around (a simulated node never holds 250 pods).
        let ip = Ipv4Addr::from(self.base + 2 + g.next % (self.size - 3));
        g.next += 1;
        g.ips.insert(pod.uid.clone(), ip);
        Ok(ip)
    }

    async fn teardown_sandbox(&self, pod: &PodRef) -> Result<()> {
        let mut g = self.inner.lock();
        g.ips.remove(&pod.uid);
        let prefix = format!("{}-", pod.uid);
        g.containers.retain(|id, _| !id.starts_with(&prefix));
        Ok(())
    }

    async fn start(&self, req: &StartRequest, _init: bool) -> Result<Running, StartError> {
        let id = format!("{}-{}-{}", req.pod.uid, req.container.name, req.attempt);
        self.inner.lock().containers.insert(id.clone(), None);
        Ok(Running {
            id,
            started_at: crate::now(),
            image_id: format!(
                "sha256:{:064x}",
                req.container.image.as_deref().unwrap_or_default().len()
            ),
        })
    }

    async fn state(&self, _pod: &PodRef, id: &str) -> State {
        match self.inner.lock().containers.get(id) {
            None => State::Unknown,
            Some(None) => State::Running,
            Some(Some(e)) => State::Exited(e.clone()),
        }
    }

    async fn stop(&self, _pod: &PodRef, id: &str, grace: Duration) {
        if let Some(c) = self.inner.lock().containers.get_mut(id) {
            if c.is_none() {
                let code = if grace.is_zero() { 137 } else { 0 };
                *c = Some(Exited {
                    exit_code: code,
                    signal: (code == 137).then_some(9),
                    started_at: String::new(),
                    finished_at: crate::now(),
                    oom_killed: false,
                    message: None,
                });
            }
        }
    }

    async fn remove(&self, _pod: &PodRef, id: &str) -> Result<()> {
        self.inner.lock().containers.remove(id);
        Ok(())
    }

    async fn exec(&self, _id: &str, _cmd: &[String], _timeout: Duration) -> Result<ExecOutput> {
        Ok(ExecOutput {
            code: Some(0),
            output: String::new(),
        })
    }

    fn pod_dir(&self, _pod: &PodRef) -> Option<std::path::PathBuf> {
        None
    }

    fn records(&self) -> Vec<Record> {
        Vec::new()
    }

    fn sandboxes(&self) -> Vec<PodRef> {
        Vec::new()
    }
}
