//! The node's part of the pod network beyond CNI: IP forwarding, a route to every other
//! node's podCIDR through that node's address (nodes share a link, as in flannel's
//! host-gw mode), and masquerading of pod traffic that leaves the cluster network —
//! in the agent's own nftables table `skiff_node`, rewritten from the Node list.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// The agent's nftables table (for the default bridge; see [`table_name`]).
pub const TABLE: &str = "skiff_node";

/// The name of a table of the agent whose pod bridge is `bridge`: `<base>` for the
/// default `skiff0`, `<base>_<bridge>` otherwise — so agents sharing one machine (tests)
/// keep apart.
pub fn table_name(base: &str, bridge: &str) -> String {
    if bridge == "skiff0" {
        base.to_owned()
    } else {
        format!("{base}_{bridge}")
    }
}

/// Other nodes' podCIDRs and addresses, from the Node list.
pub fn peers(nodes: &[Node], me: &str) -> BTreeMap<String, Ipv4Addr> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr = n
                .spec
                .as_ref()?
                .pod_cidr
                .clone()
                .filter(|c| !c.is_empty())?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((cidr, ip))
        })
        .collect()
}

/// The nft script of the table: masquerade what pods send outside all podCIDRs.
pub fn ruleset(my_cidr: &str, bridge: &str, all_cidrs: &[String]) -> String {
    let table = table_name(TABLE, bridge);
    let mut dests: Vec<&str> = all_cidrs.iter().map(String::as_str).collect();
    if !dests.contains(&my_cidr) {
        dests.push(my_cidr);
    }
    format!(
        "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {my_cidr} oifname != \"{bridge}\" ip daddr != {{ {} }} masquerade\n  }}\n}}\n",
        dests.join(", ")
    )
}

async fn nft(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .await?;
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `ip <args>`; its stderr is the error.
pub(crate) async fn ip(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Keeps routes and masquerading in line with the Node list until `shutdown`, then
/// removes the table (routes stay: pods keep talking while the agent restarts).
///
/// # Errors
/// If forwarding cannot be enabled.
pub async fn run(
    client: Client,
    me: String,
    my_cidr: String,
    bridge: String,
    shutdown: CancellationToken,
) -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling IPv4 forwarding")?;
    let api: Api<Node> = Api::all(client);
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()));
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(stream));
    let mut routes: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut applied = String::new();
    // Whether the store holds a whole list. Not `reader.wait_until_ready()`: that waits
    // for events only this loop's polling of the stream brings in.
    let mut listed = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = stream.next() => {
                match ev {
                    None => break,
                    Some(Ok(watcher::Event::InitDone)) => listed = true,
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watching nodes");
                        continue;
                    }
                }
                if !listed {
                    continue;
                }
                let nodes: Vec<Node> = reader.state().iter().map(|n| (**n).clone()).collect();
                let want = peers(&nodes, &me);
                for (cidr, via) in &want {
                    if routes.get(cidr) != Some(via) {
                        match ip(&["route", "replace", cidr, "via", &via.to_string()]).await {
                            Ok(()) => {
                                tracing::info!(%cidr, %via, "route to a node's pods");
                                routes.insert(cidr.clone(), *via);
                            }
                            Err(e) => tracing::warn!(%cidr, %via, error = %e, "route to a node's pods"),
                        }
                    }
                }
                let stale: Vec<String> = routes.keys().filter(|c| !want.contains_key(*c)).cloned().collect();
                for cidr in stale {
                    let _ = ip(&["route", "del", &cidr]).await;
                    routes.remove(&cidr);
                }
                let all: Vec<String> = want.keys().cloned().collect();
                let script = ruleset(&my_cidr, &bridge, &all);
                if script != applied {
                    match nft(&script).await {
                        Ok(()) => applied = script,
                        Err(e) => tracing::warn!(error = %e, "pod masquerading rules"),
                    }
                }
            }
        }
    }
    let table = table_name(TABLE, &bridge);
    let _ = nft(&format!("table ip {table} {{}}\ndelete table ip {table}\n")).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_spares_cluster_traffic() {
        let r = ruleset("10.244.1.0/24", "skiff0", &["10.244.2.0/24".into()]);
        assert!(r.contains("ip saddr 10.244.1.0/24 oifname != \"skiff0\" ip daddr != { 10.244.2.0/24, 10.244.1.0/24 } masquerade"));
        assert!(r.starts_with("table ip skiff_node {}\ndelete table ip skiff_node"));
    }

    #[test]
    fn peers_are_other_nodes_with_a_cidr_and_an_address() {
        let node = |name: &str, cidr: Option<&str>, ip: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
            }))
            .unwrap()
        };
        let nodes = vec![
            node("a", Some("10.244.0.0/24"), "10.0.0.1"),
            node("b", Some("10.244.1.0/24"), "10.0.0.2"),
            node("c", None, "10.0.0.3"),
        ];
        let p = peers(&nodes, "a");
        assert_eq!(p.len(), 1);
        assert_eq!(p["10.244.1.0/24"], Ipv4Addr::new(10, 0, 0, 2));
    }
}
