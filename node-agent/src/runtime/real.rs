//! The real runtime: a network namespace per pod connected by CNI, each container an
//! OCI bundle on an overlay rootfs, started by runc under a shim ([`crate::shim`]).
//!
//! On disk, under `<pods_dir>/<pod uid>/`: `pod.json` (which pod), `cni.json` (the ADD
//! result, for DEL), `volumes/`, and `containers/<id>/` — the bundle (`config.json`,
//! `rootfs/`, `upper/`, `work/`), the shim's `started.json`/`exit.json`, `record.json`
//! (pod, container, attempt, image), `shim.pid`, `shim.log`, `runc.log`. These records
//! and runc's own state let a restarted agent adopt what runs.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::bundle::{self, ContainerSpec};
use super::cni::{self, Cni};
use super::runc::{ExecOutput, Runc};
use super::{PodRef, Record, Running, Runtime, StartError, StartRequest, State};
use crate::image::{ImageStore, LocalImage, PullPolicy};
use crate::net::ip;
use crate::shim::{self, Exited, ShimArgs};
use skiff_controllers::scheduler::quantity::{parse_milli, parse_value};

/// runc + CNI + the image store.
pub struct RealRuntime {
    /// runc, with the agent's own state root.
    pub runc: Runc,
    /// The pod network.
    pub cni: Cni,
    /// Images.
    pub images: ImageStore,
    /// `<root>/pods`.
    pub pods_dir: PathBuf,
    /// The binary whose `shim` subcommand supervises containers (the `skiff` binary).
    pub shim_binary: PathBuf,
    /// Log rotation for the shims.
    pub max_log_bytes: u64,
    /// Rotated files kept.
    pub max_log_files: usize,
    /// Told a pod's uid when one of its containers' shims exits (the worker wakes).
    pub exits: mpsc::UnboundedSender<PodRef>,
}

/// `skiff-<uid>`: the pod's network namespace name (`/run/netns/<name>`).
pub fn netns_name(uid: &str) -> String {
    format!("skiff-{uid}")
}

fn netns_path(uid: &str) -> PathBuf {
    Path::new("/run/netns").join(netns_name(uid))
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && {
        // A zombie has exited; its parent (the shim) reaps it soon.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            != Some(true)
    }
}

impl RealRuntime {
    fn pod_root(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    fn container_dir(&self, uid: &str, id: &str) -> PathBuf {
        self.pod_root(uid).join("containers").join(id)
    }

    /// Turns the pod's container spec and the image config into what runc runs.
    fn container_spec(
        &self,
        req: &StartRequest,
        image: &LocalImage,
        id: &str,
        rootfs: &Path,
    ) -> Result<ContainerSpec, StartError> {
        let c = &req.container;
        let mut env: Vec<(String, String)> = image
            .config
            .env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        for (k, v) in &req.env {
            if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
                e.1 = v.clone();
            } else {
                env.push((k.clone(), v.clone()));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(
                0,
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
            );
        }
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.push(("HOSTNAME".into(), req.hostname.clone()));
        }
        let expand = |s: &String| expand_vars(s, &env);
        let command: Vec<String> = c.command.iter().flatten().map(expand).collect();
        let args: Vec<String> = c.args.iter().flatten().map(expand).collect();
        let argv = command_line(&command, &args, &image.config.entrypoint, &image.config.cmd);
        if argv.is_empty() {
            return Err(StartError::new(
                "CreateContainerConfigError",
                "no command specified: the image has no entrypoint or cmd and the container sets no command",
            ));
        }
        let (image_uid, image_gid) = image
            .config
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| resolve_user(u, rootfs))
            .transpose()
            .map_err(|e| StartError::new("CreateContainerConfigError", e))?
            .unwrap_or((0, 0));
        let s = &req.security;
        let uid = s.run_as_user.unwrap_or(image_uid);
        let gid = s.run_as_group.unwrap_or(if s.run_as_user.is_some() {
            0
        } else {
            image_gid
        });
        let res = c.resources.as_ref();
        let cpu_request = res
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get("cpu"))
            .or_else(|| {
                res.and_then(|r| r.limits.as_ref())
                    .and_then(|m| m.get("cpu"))
            })
            .and_then(|q| parse_milli(&q.0));
        let cpu_limit = res
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get("cpu"))
            .and_then(|q| parse_milli(&q.0));
        let memory_limit = res
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get("memory"))
            .and_then(|q| parse_value(&q.0));
        Ok(ContainerSpec {
            id: id.to_owned(),
            args: argv,
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: c
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| image.config.working_dir.clone().filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into()),
            uid,
            gid,
            additional_gids: s.supplemental_groups.clone(),
            hostname: req.hostname.clone(),
            netns: netns_path(&req.pod.uid),
            mounts: req.mounts.clone(),
            // The kubelet's conversion: shares = millicores × 1024 / 1000, at least 2.
            cpu_shares: Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2)) as u64),
            cpu_quota: cpu_limit.map(|m| (m * 100).max(1000)),
            memory_limit,
            read_only_rootfs: s.read_only_root,
            no_new_privileges: !s.allow_privilege_escalation,
            privileged: s.privileged,
            capabilities_add: s.capabilities_add.clone(),
            capabilities_drop: s.capabilities_drop.clone(),
            cgroups_path: format!("/skiff/{id}"),
        })
    }

    async fn cleanup_container(&self, uid: &str, id: &str) -> Result<()> {
        self.runc.delete(id).await?;
        let dir = self.container_dir(uid, id);
        ImageStore::unmount_rootfs(&dir)
            .map_err(|e| anyhow::anyhow!("unmounting the rootfs of {id}: {e}"))?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
}

/// Kubernetes's rule: command replaces the entrypoint (and drops the image's cmd), args
/// replace the cmd.
pub fn command_line(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => entrypoint.iter().chain(args).cloned().collect(),
        (true, true) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// `$(VAR)` → its value (unknown ones stay as written), `$$(VAR)` → `$(VAR)`.
pub fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            // Escaped: keep one '$' and the reference as written.
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `uid[:gid]` or `name[:group]` (names looked up in the rootfs's /etc/passwd, group).
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0] != name {
                return None;
            }
            let id: u32 = f[2].parse().ok()?;
            Some((id, f.get(3).and_then(|x| x.parse().ok()).unwrap_or(id)))
        })
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_by_uid(rootfs, n).unwrap_or(0)),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| {
            format!("unable to find user {u}: no matching entries in passwd file")
        })?,
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        };
    }
    Ok((uid, gid))
}

fn lookup_by_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

impl Runtime for RealRuntime {
    async fn setup_sandbox(&self, pod: &PodRef) -> Result<Ipv4Addr> {
        let root = self.pod_root(&pod.uid);
        tokio::fs::create_dir_all(&root).await?;
        let record = root.join("pod.json");
        if !record.exists() {
            let tmp = root.join("pod.json.tmp");
            tokio::fs::write(&tmp, serde_json::to_vec(pod)?).await?;
            tokio::fs::rename(&tmp, &record).await?;
        }
        let netns = netns_path(&pod.uid);
        let cache = root.join("cni.json");
        if netns.exists() {
            if let Some(a) = Cni::cached(&cache) {
                return Ok(a.ip);
            }
        } else {
            ip(&["netns", "add", &netns_name(&pod.uid)]).await?;
        }
        let args = cni::pod_args(&pod.namespace, &pod.name, &pod.uid);
        let a = self.cni.add(&pod.uid, &netns, &args, &cache).await?;
        Ok(a.ip)
    }

    async fn teardown_sandbox(&self, pod: &PodRef) -> Result<()> {
        let root = self.pod_root(&pod.uid);
        // Containers first (their rootfs mounts must go before the directory does).
        let containers = root.join("containers");
        if let Ok(rd) = std::fs::read_dir(&containers) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                self.cleanup_container(&pod.uid, &id).await?;
            }
        }
        let netns = netns_path(&pod.uid);
        let args = cni::pod_args(&pod.namespace, &pod.name, &pod.uid);
        self.cni
            .del(&pod.uid, &netns, &args, &root.join("cni.json"))
            .await?;
        if netns.exists() {
            ip(&["netns", "del", &netns_name(&pod.uid)]).await?;
        }
        match tokio::fs::remove_dir_all(&root).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", root.display())),
        }
    }

    async fn start(&self, req: &StartRequest, init: bool) -> Result<Running, StartError> {
        let c = &req.container;
        let reference = c.image.clone().unwrap_or_default();
        let policy = PullPolicy::from_k8s(c.image_pull_policy.as_deref(), &reference);
        let image = self
            .images
            .ensure(&reference, policy)
            .await
            .map_err(|e| StartError::new(e.reason(), e))?;
        let id = format!("{}-{}-{}", req.pod.uid, c.name, req.attempt);
        let dir = self.container_dir(&req.pod.uid, &id);
        if dir.exists() {
            // A start of this attempt that did not finish (agent killed mid-start).
            self.cleanup_container(&req.pod.uid, &id)
                .await
                .map_err(|e| StartError::new("CreateContainerError", format!("{e:#}")))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| StartError::new("CreateContainerError", e))?;
        let rootfs = self
            .images
            .mount_rootfs(&image, &dir)
            .map_err(|e| StartError::new("CreateContainerError", e))?;
        let spec = self.container_spec(req, &image, &id, &rootfs)?;
        bundle::write_bundle(&dir, &spec, &rootfs)
            .map_err(|e| StartError::new("CreateContainerError", format!("{e:#}")))?;
        let record = Record {
            pod: req.pod.clone(),
            container: c.name.clone(),
            attempt: req.attempt,
            id: id.clone(),
            image: reference.clone(),
            image_id: image.id.clone(),
            init,
            started_at: None,
        };
        std::fs::write(
            dir.join("record.json"),
            serde_json::to_vec(&record).unwrap_or_default(),
        )
        .map_err(|e| StartError::new("CreateContainerError", e))?;
        if let Some(parent) = req.log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let args = ShimArgs {
            runc: self.runc.binary.clone(),
            runc_root: self.runc.root.clone(),
            id: id.clone(),
            bundle: dir.clone(),
            state_dir: dir.clone(),
            log_path: req.log_path.clone(),
            max_log_bytes: self.max_log_bytes,
            max_log_files: self.max_log_files,
            cgroup: spec.cgroups_path.clone(),
        };
        let shim_log = std::fs::File::create(dir.join("shim.log"))
            .map_err(|e| StartError::new("CreateContainerError", e))?;
        let mut cmd = std::process::Command::new(&self.shim_binary);
        cmd.args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            // Its own process group: signals to the agent's group do not reach it, and
            // it lives on when the agent exits.
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| StartError::new("RunContainerError", format!("starting the shim: {e}")))?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(dir.join("shim.pid"), pid.to_string());
        }
        let stdout = child.stdout.take().expect("piped");
        let result = shim::await_start(stdout, Duration::from_secs(60)).await;
        let exits = self.exits.clone();
        let pod = req.pod.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exits.send(pod);
        });
        match result {
            Ok(_) => Ok(Running {
                id,
                started_at: shim::read_started(&dir)
                    .map(|s| s.started_at)
                    .unwrap_or_default(),
                image_id: image.id,
            }),
            // The attempt happened and failed: exit.json says how (StartError, 128).
            Err(_) if shim::read_exited(&dir).is_some() => Ok(Running {
                id,
                started_at: String::new(),
                image_id: image.id,
            }),
            Err(e) => Err(StartError::new("RunContainerError", format!("{e:#}"))),
        }
    }

    async fn state(&self, pod: &PodRef, id: &str) -> State {
        let dir = self.container_dir(&pod.uid, id);
        if let Some(exited) = shim::read_exited(&dir) {
            return State::Exited(exited);
        }
        let Some(started) = shim::read_started(&dir) else {
            return State::Unknown;
        };
        if pid_alive(started.pid) {
            return State::Running;
        }
        // The container ended; its shim writes exit.json in a moment — unless the shim
        // itself is gone (killed), in which case the exit status is lost.
        let shim_pid = std::fs::read_to_string(dir.join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(0);
        if pid_alive(shim_pid) {
            return State::Running;
        }
        if let Some(exited) = shim::read_exited(&dir) {
            return State::Exited(exited);
        }
        State::Exited(Exited {
            exit_code: 255,
            signal: None,
            started_at: started.started_at,
            finished_at: jiff::Timestamp::now().to_string(),
            oom_killed: false,
            message: Some("the container's supervisor died; its exit status is unknown".into()),
        })
    }

    async fn stop(&self, pod: &PodRef, id: &str, grace: Duration) {
        let ended = || async { !matches!(self.state(pod, id).await, State::Running) };
        if ended().await {
            return;
        }
        if let Err(e) = self.runc.kill(id, "TERM", false).await {
            tracing::debug!(id, error = %e, "SIGTERM");
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if ended().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Err(e) = self.runc.kill(id, "KILL", true).await {
            tracing::debug!(id, error = %e, "SIGKILL");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !ended().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn remove(&self, pod: &PodRef, id: &str) -> Result<()> {
        self.cleanup_container(&pod.uid, id).await
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.runc.exec(id, cmd, timeout).await
    }

    fn pod_dir(&self, pod: &PodRef) -> Option<PathBuf> {
        Some(self.pod_root(&pod.uid))
    }

    fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let Ok(pods) = std::fs::read_dir(&self.pods_dir) else {
            return out;
        };
        for pod in pods.flatten() {
            let Ok(cs) = std::fs::read_dir(pod.path().join("containers")) else {
                continue;
            };
            for c in cs.flatten() {
                let dir = c.path();
                let Some(mut r) = std::fs::read(dir.join("record.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                else {
                    continue;
                };
                r.started_at = shim::read_started(&dir).map(|s| s.started_at);
                out.push(r);
            }
        }
        out
    }

    fn sandboxes(&self) -> Vec<PodRef> {
        let Ok(pods) = std::fs::read_dir(&self.pods_dir) else {
            return Vec::new();
        };
        pods.flatten()
            .filter_map(|p| {
                serde_json::from_slice(&std::fs::read(p.path().join("pod.json")).ok()?).ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let (ep, cmd) = (s(&["/entry"]), s(&["default"]));
        assert_eq!(command_line(&[], &[], &ep, &cmd), s(&["/entry", "default"]));
        assert_eq!(
            command_line(&[], &s(&["x"]), &ep, &cmd),
            s(&["/entry", "x"])
        );
        assert_eq!(command_line(&s(&["sh"]), &[], &ep, &cmd), s(&["sh"]));
        assert_eq!(
            command_line(&s(&["sh"]), &s(&["-c", "y"]), &ep, &cmd),
            s(&["sh", "-c", "y"])
        );
    }

    #[test]
    fn variable_references_expand() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand_vars("x$(A)y", &env), "x1y");
        assert_eq!(expand_vars("$(B)", &env), "$(B)");
        assert_eq!(expand_vars("$$(A)", &env), "$(A)");
        assert_eq!(expand_vars("$HOME $(A", &env), "$HOME $(A");
    }

    #[test]
    fn users_resolve_from_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user("nobody", dir.path()), Ok((65534, 65534)));
        assert_eq!(resolve_user("1000", dir.path()), Ok((1000, 0)));
        assert_eq!(resolve_user("65534:staff", dir.path()), Ok((65534, 50)));
        assert!(resolve_user("ghost", dir.path()).is_err());
    }
}
