//! The API server keeps no state of its own: it runs unchanged on the real etcd
//! (`skiff server --store-endpoints`), and kubectl works against it.

use anyhow::{ensure, Result};
use skiff_tests::server::Server;
use skiff_tests::{Cluster, ClusterConfig, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_runs_on_real_etcd() -> Result<()> {
    let etcd = Cluster::start(ClusterConfig::new(Target::Etcd, 1)).await?;
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        dir.path(),
        &[format!("--store-endpoints={}", etcd.endpoints().join(","))],
    )
    .await?;
    let k = server.kubectl();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: on-etcd}\ndata: {a: \"1\"}\n";
    let out = k.run_stdin(&["apply", "-f", "-"], Some(manifest)).await?;
    ensure!(
        out.success() && out.stdout.contains("configmap/on-etcd created"),
        "{out:?}"
    );
    let out = k
        .run_stdin(
            &["apply", "-f", "-"],
            Some(&manifest.replace("\"1\"", "\"2\"")),
        )
        .await?;
    ensure!(
        out.success() && out.stdout.contains("configured"),
        "{out:?}"
    );
    ensure!(
        k.ok(&["get", "cm", "on-etcd", "-o", "jsonpath={.data.a}"])
            .await?
            == "2"
    );
    let ns = k.ok(&["get", "ns", "-o", "name"]).await?;
    ensure!(ns.contains("namespace/kube-system"), "{ns}");
    // The objects are in etcd, under /registry, readable by etcdctl.
    let ctl = skiff_tests::Etcdctl::new(etcd.endpoints());
    let out = ctl
        .run(&[
            "get",
            "/registry/configmaps/default/on-etcd",
            "--print-value-only",
        ])
        .await?;
    ensure!(
        out.success() && out.stdout.contains("\"a\":\"2\""),
        "{out:?}"
    );
    Ok(())
}
