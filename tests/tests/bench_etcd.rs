//! Every `skiff-bench` workload runs against a real etcd at tiny sizes and its checks
//! pass: the benchmark is proven on etcd before it measures Skiff.

use std::time::Duration;

use anyhow::Result;
use skiff_tests::bench::workload::{parse_suite, Params};
use skiff_tests::bench::{load_keys, run_case, Session};
use skiff_tests::{Cluster, ClusterConfig, Target};

fn tiny() -> Params {
    Params {
        connections: 2,
        total: 200,
        max_duration: Duration::from_secs(20),
        key_space: 100,
        watch_events: 30,
        ..Params::default()
    }
}

#[tokio::test]
async fn every_workload_runs_clean_on_etcd() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let mut session = Session::new(cluster.endpoints(), tiny());
    let suite =
        parse_suite("put:1,put:8,range-lin:4,range-ser:4,txn-put:4,watch:20,lease-keepalive:4")?;
    for case in suite {
        let r = run_case(&mut session, case).await?;
        assert!(!r.failed, "{case}: {}", r.note);
        assert_eq!(r.summary.errors, 0, "{case}: {}", r.note);
        let expected = if case.workload.name() == "watch" {
            30 * 20
        } else {
            200
        };
        assert_eq!(r.summary.ops, expected, "{case}: {}", r.note);
        assert!(r.summary.p50_ms > 0.0, "{case}");
    }
    Ok(())
}

#[tokio::test]
async fn txn_compares_succeed_when_clients_own_their_keys() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let mut session = Session::new(cluster.endpoints(), tiny());
    let r = run_case(&mut session, "txn-put:4".parse()?).await?;
    assert_eq!(r.note, "0 compares failed");
    Ok(())
}

#[tokio::test]
async fn load_writes_each_key_once_and_rss_is_read() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    load_keys(&cluster.endpoints(), &tiny(), 500).await?;
    let out = skiff_tests::Etcdctl::new(cluster.endpoints())
        .ok(&["get", "k/", "--prefix", "--keys-only", "-w", "json"])
        .await?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["count"], 500, "{out}");
    assert!(cluster.member(0)?.rss_kib()? > 0);
    Ok(())
}

#[tokio::test]
async fn cases_bounded_by_time_stop_early() -> Result<()> {
    let cluster = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let params = Params {
        total: u64::MAX,
        max_duration: Duration::from_millis(500),
        ..tiny()
    };
    let mut session = Session::new(cluster.endpoints(), params);
    let started = std::time::Instant::now();
    let r = run_case(&mut session, "put:4".parse()?).await?;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.summary.ops > 0);
    Ok(())
}
