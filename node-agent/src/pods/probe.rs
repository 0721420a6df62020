//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket), one task per
//! running container attempt, with Kubernetes's timing (initialDelaySeconds,
//! periodSeconds, timeoutSeconds, success/failure thresholds). Results land in a shared
//! map the pod worker reads; a change wakes the worker.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::runtime::Runtime;

/// What the probes of one container attempt concluded so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Readiness (true once started when there is no readiness probe).
    pub ready: bool,
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Liveness or startup failed for good: the container must be restarted (message).
    pub failed: Option<String>,
}

/// The probe tasks of a pod.
pub struct Probes {
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    tasks: HashMap<String, (String, JoinHandle<()>)>,
    wake: mpsc::UnboundedSender<()>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.drain() {
            t.abort();
        }
    }
}

impl Probes {
    /// Probes waking the worker through `wake`.
    pub fn new(wake: mpsc::UnboundedSender<()>) -> Probes {
        Probes {
            verdicts: Arc::default(),
            tasks: HashMap::new(),
            wake,
        }
    }

    /// The verdict for container `name` (its current attempt).
    pub fn verdict(&self, name: &str) -> Verdict {
        self.verdicts.lock().get(name).cloned().unwrap_or_default()
    }

    /// Makes sure attempt `id` of `c` is being probed (starting fresh for a new attempt).
    pub fn ensure<R: Runtime>(&mut self, rt: &Arc<R>, c: &Container, id: &str, ip: Ipv4Addr) {
        if self.tasks.get(&c.name).is_some_and(|(tid, _)| tid == id) {
            return;
        }
        self.stop(&c.name);
        let no_probes =
            c.startup_probe.is_none() && c.readiness_probe.is_none() && c.liveness_probe.is_none();
        let initial = Verdict {
            ready: no_probes,
            started: c.startup_probe.is_none(),
            failed: None,
        };
        self.verdicts.lock().insert(c.name.clone(), initial);
        if no_probes {
            return;
        }
        let task = tokio::spawn(run(
            rt.clone(),
            c.clone(),
            id.to_owned(),
            ip,
            self.verdicts.clone(),
            self.wake.clone(),
        ));
        self.tasks.insert(c.name.clone(), (id.to_owned(), task));
    }

    /// Stops probing container `name` and forgets its verdict.
    pub fn stop(&mut self, name: &str) {
        if let Some((_, t)) = self.tasks.remove(name) {
            t.abort();
        }
        self.verdicts.lock().remove(name);
    }
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(min) as u64)
}

async fn run<R: Runtime>(
    rt: Arc<R>,
    c: Container,
    id: String,
    ip: Ipv4Addr,
    verdicts: Arc<Mutex<HashMap<String, Verdict>>>,
    wake: mpsc::UnboundedSender<()>,
) {
    let update = |f: &dyn Fn(&mut Verdict)| {
        let mut g = verdicts.lock();
        let v = g.entry(c.name.clone()).or_default();
        let before = v.clone();
        f(v);
        if *v != before {
            let _ = wake.send(());
        }
    };
    if let Some(p) = &c.startup_probe {
        match until_settled(&*rt, &c, &id, ip, p, true).await {
            Ok(()) => update(&|v| v.started = true),
            Err(msg) => {
                update(&|v| v.failed = Some(format!("Startup probe failed: {msg}")));
                return;
            }
        }
    }
    if c.readiness_probe.is_none() {
        update(&|v| v.ready = true);
    }
    let readiness = async {
        let Some(p) = &c.readiness_probe else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(secs(p.initial_delay_seconds, 0, 0)).await;
        let (mut ok_run, mut fail_run) = (0, 0);
        loop {
            match check(&*rt, &c, &id, ip, p).await {
                Ok(()) => {
                    ok_run += 1;
                    fail_run = 0;
                    if ok_run >= p.success_threshold.unwrap_or(1).max(1) {
                        update(&|v| v.ready = true);
                    }
                }
                Err(msg) => {
                    fail_run += 1;
                    ok_run = 0;
                    if fail_run >= p.failure_threshold.unwrap_or(3).max(1) {
                        tracing::debug!(container = %c.name, %msg, "readiness probe failed");
                        update(&|v| v.ready = false);
                    }
                }
            }
            tokio::time::sleep(secs(p.period_seconds, 10, 1)).await;
        }
    };
    let liveness = async {
        let Some(p) = &c.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(secs(p.initial_delay_seconds, 0, 0)).await;
        let mut fail_run = 0;
        loop {
            match check(&*rt, &c, &id, ip, p).await {
                Ok(()) => fail_run = 0,
                Err(msg) => {
                    fail_run += 1;
                    if fail_run >= p.failure_threshold.unwrap_or(3).max(1) {
                        update(&|v| v.failed = Some(format!("Liveness probe failed: {msg}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(secs(p.period_seconds, 10, 1)).await;
        }
    };
    tokio::select! {
        _ = readiness => {}
        _ = liveness => {}
    }
}

/// Probes until `success_threshold` successes (Ok) or `failure_threshold` failures.
async fn until_settled<R: Runtime>(
    rt: &R,
    c: &Container,
    id: &str,
    ip: Ipv4Addr,
    p: &Probe,
    _startup: bool,
) -> Result<(), String> {
    tokio::time::sleep(secs(p.initial_delay_seconds, 0, 0)).await;
    let mut failures = 0;
    loop {
        match check(rt, c, id, ip, p).await {
            Ok(()) => return Ok(()),
            Err(msg) => {
                failures += 1;
                if failures >= p.failure_threshold.unwrap_or(3).max(1) {
                    return Err(msg);
                }
            }
        }
        tokio::time::sleep(secs(p.period_seconds, 10, 1)).await;
    }
}

fn port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// One probe run: Ok, or why it failed (in the kubelet's words where it has them).
pub async fn check<R: Runtime>(
    rt: &R,
    c: &Container,
    id: &str,
    ip: Ipv4Addr,
    p: &Probe,
) -> Result<(), String> {
    let timeout = secs(p.timeout_seconds, 1, 1);
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let out = rt
            .exec(id, &cmd, timeout)
            .await
            .map_err(|e| format!("{e:#}"))?;
        return match out.code {
            Some(0) => Ok(()),
            Some(code) => Err(format!(
                "command {cmd:?} exited with {code}: {}",
                out.output.trim()
            )),
            None => Err(format!("command {cmd:?} timed out")),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let port = port(c, &t.port)?;
        let host = t.host.clone().unwrap_or_else(|| ip.to_string());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(h) = &p.http_get {
        let port = port(c, &h.port)?;
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS probes are not supported by the skiff agent".into());
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let headers: String = h
            .http_headers
            .iter()
            .flatten()
            .map(|x| format!("{}: {}\r\n", x.name, x.value))
            .collect();
        let get = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1024];
            let mut got = 0;
            while got < buf.len() {
                let n = s.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
                if n == 0 || buf[..got + n].windows(2).any(|w| w == b"\r\n") {
                    got += n;
                    break;
                }
                got += n;
            }
            let line = String::from_utf8_lossy(&buf[..got]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("malformed HTTP response from {host}:{port}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    Err("the probe has no handler the skiff agent supports (exec, httpGet, tcpSocket)".into())
}
