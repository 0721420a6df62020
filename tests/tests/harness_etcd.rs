//! The harness proven against the real etcd 3.4: clusters of 1 and 3 members start and
//! serve the proto client and `etcdctl`; after a kill -9 of the 3-member leader, writes
//! resume through the survivors and the killed member rejoins on its own data dir.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use skiff_proto::etcdserverpb::{PutRequest, RangeRequest};
use skiff_tests::client::{connect, kv};
use skiff_tests::{Cluster, ClusterConfig, Etcdctl, Target};

async fn put(endpoint: &str, key: &str, value: &str) -> Result<()> {
    let mut client = kv(connect(endpoint).await?);
    client
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn get(endpoint: &str, key: &str) -> Result<Option<String>> {
    let mut client = kv(connect(endpoint).await?);
    let resp = client
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Retries a put on every given endpoint until one succeeds or `timeout` passes.
async fn put_until_ok(
    endpoints: &[String],
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for ep in endpoints {
            let attempt = tokio::time::timeout(Duration::from_secs(2), put(ep, key, value)).await;
            if let Ok(Ok(())) = attempt {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("no write succeeded within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn single_member_etcd_serves_proto_client_and_etcdctl() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let ep = cluster.endpoints()[0].clone();
    put(&ep, "greeting", "hello").await?;
    assert_eq!(get(&ep, "greeting").await?.as_deref(), Some("hello"));

    let ctl = Etcdctl::new(cluster.endpoints());
    ctl.ok(&["put", "from-etcdctl", "v1"]).await?;
    assert_eq!(get(&ep, "from-etcdctl").await?.as_deref(), Some("v1"));
    let out = ctl.ok(&["get", "greeting", "--print-value-only"]).await?;
    assert_eq!(out.trim(), "hello");

    assert_eq!(cluster.leader().await?, 0);
    let rss = cluster.member(0)?.rss_kib()?;
    assert!(rss > 1000, "etcd RSS {rss} KiB");
    Ok(())
}

#[tokio::test]
async fn three_member_etcd_survives_leader_kill() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 3)).await?;
    let endpoints = cluster.endpoints();
    put(&endpoints[0], "before", "1").await?;
    for ep in &endpoints {
        assert_eq!(get(ep, "before").await?.as_deref(), Some("1"), "on {ep}");
    }

    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let pid = cluster.member(leader)?.pid().expect("leader runs");
    cluster.kill(leader)?;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let survivors = cluster.live_endpoints();
    assert_eq!(survivors.len(), 2);
    put_until_ok(&survivors, "after", "2", Duration::from_secs(20)).await?;
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, leader);
    for ep in &survivors {
        assert_eq!(get(ep, "after").await?.as_deref(), Some("2"), "on {ep}");
    }

    // The killed member comes back on its data dir and catches up.
    cluster.restart(leader).await?;
    let back = cluster.member(leader)?.client_url().to_string();
    assert_eq!(get(&back, "after").await?.as_deref(), Some("2"));
    assert_eq!(get(&back, "before").await?.as_deref(), Some("1"));
    Ok(())
}

#[tokio::test]
async fn paused_member_stops_answering_and_resumes() -> Result<()> {
    let mut cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let ep = cluster.endpoints()[0].clone();
    put(&ep, "k", "v").await?;
    cluster.pause(0)?;
    let stalled = tokio::time::timeout(Duration::from_millis(500), get(&ep, "k")).await;
    assert!(stalled.is_err(), "a SIGSTOPped member answered");
    cluster.resume(0)?;
    assert_eq!(get(&ep, "k").await?.as_deref(), Some("v"));
    Ok(())
}

#[tokio::test]
async fn drop_kills_every_member() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 3)).await?;
    let pids: Vec<u32> = cluster.members().iter().filter_map(|m| m.pid()).collect();
    let dir = cluster.dir().to_path_buf();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
    assert!(!dir.exists(), "temp dir left behind");
    Ok(())
}
