//! Pod networking through the real CNI plugins (Debian's `containernetworking-plugins`):
//! a `bridge` plugin with `host-local` IPAM on the node's podCIDR for `eth0`, and the
//! `loopback` plugin for `lo`, executed as the CNI spec says (environment + network
//! configuration on stdin, result on stdout). The ADD result is cached so DEL gets the
//! same `prevResult`, even after an agent restart.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The CNI spec version the configuration speaks (the Debian 12 plugins know 1.0.0).
pub const CNI_VERSION: &str = "1.0.0";

/// The node's pod network.
#[derive(Clone, Debug)]
pub struct Cni {
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The bridge the pods hang off (`skiff0`).
    pub bridge: String,
    /// The node's podCIDR, e.g. `10.244.1.0/24`.
    pub subnet: String,
    /// host-local's allocation directory.
    pub ipam_dir: PathBuf,
    /// MTU of the pod interfaces.
    pub mtu: u32,
}

/// What ADD assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The pod's address on eth0.
    pub ip: Ipv4Addr,
    /// The bridge's address (the pod's default gateway).
    pub gateway: Option<Ipv4Addr>,
}

/// Where Debian and upstream put the plugins.
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
}

/// The plugins the agent needs and are missing from `dirs`.
pub fn missing_plugins(dirs: &[PathBuf]) -> Vec<&'static str> {
    ["bridge", "host-local", "loopback"]
        .into_iter()
        .filter(|p| !dirs.iter().any(|d| d.join(p).is_file()))
        .collect()
}

impl Cni {
    fn bridge_conf(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": "skiff",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            // Masquerading is the agent's own nftables table, not the plugin's iptables.
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": self.mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            }
        })
    }

    fn loopback_conf() -> Value {
        json!({"cniVersion": CNI_VERSION, "name": "skiff-lo", "type": "loopback"})
    }

    fn plugin(&self, name: &str) -> Result<PathBuf> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "CNI plugin {name:?} not found in {:?} (install containernetworking-plugins)",
                    self.plugin_dirs
                )
            })
    }

    async fn exec(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        args: &str,
    ) -> Result<Value> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_owned();
        let bin = self.plugin(&plugin)?;
        let path = std::env::join_paths(&self.plugin_dirs)?;
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(&serde_json::to_vec(conf)?).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            // Plugins report errors as JSON on stdout: {code, msg, details}.
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = err["msg"].as_str().map(String::from).unwrap_or_else(|| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
            let details = err["details"].as_str().unwrap_or_default();
            bail!("CNI {plugin} {command}: {msg} {details}");
        }
        if out.stdout.trim_ascii().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("CNI {plugin} result"))
    }

    /// Connects the pod's network namespace: `lo` up, `eth0` on the bridge with an
    /// address from the podCIDR. The raw result is written to `cache` for [`Cni::del`].
    ///
    /// # Errors
    /// If a plugin fails (what it said is in the error).
    pub async fn add(
        &self,
        container_id: &str,
        netns: &Path,
        pod_args: &str,
        cache: &Path,
    ) -> Result<Attachment> {
        self.exec(
            "ADD",
            &Self::loopback_conf(),
            container_id,
            netns,
            "lo",
            pod_args,
        )
        .await?;
        let result = self
            .exec(
                "ADD",
                &self.bridge_conf(),
                container_id,
                netns,
                "eth0",
                pod_args,
            )
            .await?;
        let tmp = cache.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&result)?)?;
        std::fs::rename(&tmp, cache)?;
        parse_attachment(&result)
    }

    /// Disconnects the pod (releases its address). Idempotent: a pod whose namespace is
    /// gone, or that was never added, is not an error.
    ///
    /// # Errors
    /// If the bridge plugin fails.
    pub async fn del(
        &self,
        container_id: &str,
        netns: &Path,
        pod_args: &str,
        cache: &Path,
    ) -> Result<()> {
        let mut conf = self.bridge_conf();
        if let Ok(prev) = std::fs::read(cache) {
            if let Ok(prev) = serde_json::from_slice::<Value>(&prev) {
                conf["prevResult"] = prev;
            }
        }
        // The spec allows an empty CNI_NETNS on DEL when the namespace is gone.
        let ns = if netns.exists() { netns } else { Path::new("") };
        self.exec("DEL", &conf, container_id, ns, "eth0", pod_args)
            .await?;
        let _ = std::fs::remove_file(cache);
        Ok(())
    }

    /// The address cached for a pod by an earlier ADD.
    pub fn cached(cache: &Path) -> Option<Attachment> {
        let raw = std::fs::read(cache).ok()?;
        parse_attachment(&serde_json::from_slice(&raw).ok()?).ok()
    }
}

/// `K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;…` for `CNI_ARGS`.
pub fn pod_args(namespace: &str, name: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}"
    )
}

fn parse_attachment(result: &Value) -> Result<Attachment> {
    let ip = result["ips"]
        .as_array()
        .and_then(|ips| {
            ips.iter().find_map(|i| {
                let addr = i["address"].as_str()?;
                addr.split('/').next()?.parse::<Ipv4Addr>().ok().map(|a| {
                    (
                        a,
                        i["gateway"]
                            .as_str()
                            .and_then(|g| g.parse::<Ipv4Addr>().ok()),
                    )
                })
            })
        })
        .context("the CNI result has no IPv4 address")?;
    Ok(Attachment {
        ip: ip.0,
        gateway: ip.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_from_a_result() {
        let r = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
            "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}]});
        let a = parse_attachment(&r).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(a.gateway, Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert!(parse_attachment(&json!({"ips": []})).is_err());
    }

    #[test]
    fn the_bridge_config_uses_the_pod_cidr() {
        let cni = Cni {
            plugin_dirs: default_plugin_dirs(),
            bridge: "skiff0".into(),
            subnet: "10.244.3.0/24".into(),
            ipam_dir: "/var/lib/skiff/cni".into(),
            mtu: 1500,
        };
        let c = cni.bridge_conf();
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(c["bridge"], "skiff0");
        assert_eq!(c["ipMasq"], false);
    }
}
