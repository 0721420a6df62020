//! The real kubectl (v1.32) against a running `skiff server`: the verbs users type every
//! day, and the errors they expect to read.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use skiff_tests::server::Server;
use tokio::io::{AsyncBufReadExt, BufReader};

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports: [{containerPort: 8080}]
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: "1"}
"#;

async fn next_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<String> {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    line.context("kubectl ended")
}

fn json(s: &str) -> Result<Value> {
    serde_json::from_str(s).with_context(|| format!("not JSON: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_applies_gets_and_deletes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let k = server.kubectl();
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let manifest = manifest.to_str().context("path")?;

    let out = k.ok(&["api-resources"]).await?;
    for want in [
        "deployments",
        "apps/v1",
        "pods",
        "leases",
        "coordination.k8s.io/v1",
        "endpointslices",
    ] {
        ensure!(out.contains(want), "api-resources lacks {want}:\n{out}");
    }
    let out = k.ok(&["version"]).await?;
    ensure!(out.contains("Server Version: v1.32"), "{out}");

    let out = k.ok(&["create", "-f", manifest]).await?;
    ensure!(
        out.contains("deployment.apps/web created")
            && out.contains("service/web created")
            && out.contains("configmap/cfg created"),
        "{out}"
    );
    let dup = k.run(&["create", "-f", manifest]).await?;
    ensure!(
        !dup.success()
            && dup.stderr.contains("AlreadyExists")
            && dup.stderr.contains("already exists"),
        "{dup:?}"
    );

    // apply over create (kubectl patches the annotation in), then apply a change.
    k.ok(&["apply", "-f", manifest]).await?;
    let changed = MANIFEST
        .replace("image: busybox:1.36", "image: busybox:1.37")
        .replace(
            r#"env: [{name: A, value: "1"}, {name: B, value: "2"}]"#,
            r#"env: [{name: B, value: "3"}]"#,
        )
        .replace("replicas: 3", "replicas: 2");
    let out = k.run_stdin(&["apply", "-f", "-"], Some(&changed)).await?;
    ensure!(
        out.success() && out.stdout.contains("deployment.apps/web configured"),
        "{out:?}"
    );
    let d = json(&k.ok(&["get", "deploy", "web", "-o", "json"]).await?)?;
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    ensure!(c["image"] == "busybox:1.37", "{c}");
    ensure!(
        c["env"] == serde_json::json!([{"name": "B", "value": "3"}]),
        "env: {}",
        c["env"]
    );
    ensure!(
        d["spec"]["replicas"] == 2 && d["metadata"]["generation"].as_i64() >= Some(2),
        "{d}"
    );
    let again = k.run_stdin(&["apply", "-f", "-"], Some(&changed)).await?;
    ensure!(
        again.stdout.contains("deployment.apps/web unchanged"),
        "{again:?}"
    );

    // get: table, yaml, json, selectors.
    let out = k.ok(&["get", "deployments"]).await?;
    ensure!(
        out.contains("READY")
            && out.contains("UP-TO-DATE")
            && out.contains("AVAILABLE")
            && out.contains("web"),
        "{out}"
    );
    let out = k.ok(&["get", "svc", "web"]).await?;
    ensure!(
        out.contains("CLUSTER-IP") && out.contains("80/TCP"),
        "{out}"
    );
    let out = k.ok(&["get", "deploy", "web", "-o", "yaml"]).await?;
    ensure!(
        out.contains("kind: Deployment") && out.contains("resourceVersion:"),
        "{out}"
    );
    let out = k
        .ok(&["get", "deploy", "-l", "app=web", "-o", "name"])
        .await?;
    ensure!(out.trim() == "deployment.apps/web", "{out}");
    let out = k
        .ok(&["get", "deploy", "-l", "app=nope", "-o", "name"])
        .await?;
    ensure!(out.trim().is_empty(), "{out}");
    let out = k
        .ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=cfg",
            "-o",
            "name",
        ])
        .await?;
    ensure!(out.trim() == "configmap/cfg", "{out}");
    let bad = k
        .run(&["get", "cm", "--field-selector", "spec.bogus=1"])
        .await?;
    ensure!(
        !bad.success() && bad.stderr.contains("field label not supported"),
        "{bad:?}"
    );

    // get -w sees a later change.
    let mut watch = k.spawn(&[
        "get",
        "cm",
        "cfg",
        "-w",
        "-o",
        "jsonpath={.data.a}{\"\\n\"}",
    ])?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    ensure!(first.as_deref() == Some("1"), "{first:?}");
    k.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"watched"}}"#,
    ])
    .await?;
    let next = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
    ensure!(next.as_deref() == Some("watched"), "{next:?}");
    let _ = watch.kill().await;

    // describe, edit, label, annotate, scale.
    let out = k.ok(&["describe", "deploy", "web"]).await?;
    ensure!(
        out.contains("Name:") && out.contains("web") && out.contains("busybox:1.37"),
        "{out}"
    );
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/a: watched/a: edited/' \"$1\"\n",
    )?;
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()?;
    let ke = k
        .clone()
        .with_env("KUBE_EDITOR", editor.to_str().context("path")?);
    let out = ke.ok(&["edit", "cm", "cfg"]).await?;
    ensure!(out.contains("configmap/cfg edited"), "{out}");
    ensure!(
        k.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.a}"])
            .await?
            == "edited"
    );
    k.ok(&["label", "cm", "cfg", "tier=backend"]).await?;
    k.ok(&["annotate", "cm", "cfg", "note=hello"]).await?;
    let cm = json(&k.ok(&["get", "cm", "cfg", "-o", "json"]).await?)?;
    ensure!(
        cm["metadata"]["labels"]["tier"] == "backend"
            && cm["metadata"]["annotations"]["note"] == "hello",
        "{cm}"
    );
    k.ok(&["label", "cm", "cfg", "tier-"]).await?;
    let cm = json(&k.ok(&["get", "cm", "cfg", "-o", "json"]).await?)?;
    ensure!(cm["metadata"]["labels"].get("tier").is_none(), "{cm}");
    let out = k.ok(&["scale", "deploy", "web", "--replicas=5"]).await?;
    ensure!(out.contains("scaled"), "{out}");
    ensure!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await?
            == "5"
    );

    // get -w in table form: a row per change, in the columns of the first page.
    let mut watch = k.spawn(&["get", "deploy", "web", "-w"])?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let header = next_line(&mut lines).await?;
    ensure!(
        header.contains("READY") && header.contains("UP-TO-DATE"),
        "{header}"
    );
    let row = next_line(&mut lines).await?;
    ensure!(row.starts_with("web") && row.contains("0/5"), "{row}");
    k.ok(&["scale", "deploy", "web", "--replicas=6"]).await?;
    let row = next_line(&mut lines).await?;
    ensure!(row.starts_with("web") && row.contains("0/6"), "{row}");
    let _ = watch.kill().await;

    // delete (with --wait), delete ns.
    let out = k.ok(&["delete", "cm", "cfg"]).await?;
    ensure!(out.contains("configmap \"cfg\" deleted"), "{out}");
    let gone = k.run(&["get", "cm", "cfg"]).await?;
    ensure!(
        !gone.success() && gone.stderr.contains("NotFound"),
        "{gone:?}"
    );
    // kubectl's generators send protobuf bodies.
    k.ok(&["create", "ns", "scratch"]).await?;
    k.ok(&[
        "-n",
        "scratch",
        "create",
        "configmap",
        "x",
        "--from-literal=k=v",
    ])
    .await?;
    k.ok(&[
        "-n",
        "scratch",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=q",
    ])
    .await?;
    k.ok(&[
        "-n",
        "scratch",
        "create",
        "deployment",
        "d",
        "--image=busybox",
        "--replicas=2",
    ])
    .await?;
    let d = json(
        &k.ok(&["-n", "scratch", "get", "deploy", "d", "-o", "json"])
            .await?,
    )?;
    ensure!(
        d["spec"]["replicas"] == 2
            && d["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox",
        "{d}"
    );
    ensure!(
        k.ok(&[
            "-n",
            "scratch",
            "get",
            "secret",
            "s",
            "-o",
            "jsonpath={.data.p}"
        ])
        .await?
            == "cQ=="
    );
    let out = k.ok(&["delete", "ns", "scratch", "--timeout=30s"]).await?;
    ensure!(out.contains("namespace \"scratch\" deleted"), "{out}");
    let gone = k.run(&["get", "ns", "scratch"]).await?;
    ensure!(!gone.success(), "{gone:?}");
    let out = k.run(&["delete", "ns", "default"]).await?;
    ensure!(
        !out.success() && out.stderr.contains("may not be deleted"),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reports_bad_manifests_as_kubernetes_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let k = server.kubectl();

    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndatta: {a: b}\n";
    let out = k.run_stdin(&["create", "-f", "-"], Some(unknown)).await?;
    ensure!(!out.success(), "{out:?}");
    ensure!(
        out.stderr
            .contains("strict decoding error: unknown field \"datta\""),
        "{}",
        out.stderr
    );

    let invalid = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n";
    let out = k.run_stdin(&["create", "-f", "-"], Some(invalid)).await?;
    ensure!(
        !out.success() && out.stderr.contains("is invalid") && out.stderr.contains("metadata.name"),
        "{}",
        out.stderr
    );

    let mismatch = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, image: busybox}]}
"#;
    let out = k.run_stdin(&["create", "-f", "-"], Some(mismatch)).await?;
    ensure!(
        !out.success()
            && out.stderr.contains("selector")
            && out.stderr.contains("does not match template `labels`"),
        "{}",
        out.stderr
    );

    let out = k.run(&["get", "pods", "nope"]).await?;
    ensure!(
        out.stderr
            .contains("Error from server (NotFound): pods \"nope\" not found"),
        "{}",
        out.stderr
    );
    let out = k
        .run_stdin(
            &["-n", "missing", "create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
        )
        .await?;
    ensure!(
        out.stderr.contains("namespaces \"missing\" not found"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// A stand-in for a node agent's log endpoint: answers every request with the path and
/// query it was asked for, then two log lines.
async fn fake_agent() -> Result<(u16, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = format!("asked {target}\nline one\nline two\n");
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok((port, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_are_proxied_to_the_pods_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let k = server.kubectl();
    let (port, agent) = fake_agent().await?;
    let node = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}},"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    let out = k.run_stdin(&["create", "-f", "-"], Some(&node)).await?;
    ensure!(out.success(), "{out:?}");
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}]}}"#;
    let out = k.run_stdin(&["create", "-f", "-"], Some(pod)).await?;
    ensure!(out.success(), "{out:?}");
    let out = k.ok(&["logs", "p", "--tail=5"]).await?;
    ensure!(
        out.contains("asked /containerLogs/default/p/c?")
            && out.contains("tailLines=5")
            && out.contains("line two"),
        "{out}"
    );
    let unbound = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    k.run_stdin(&["create", "-f", "-"], Some(unbound)).await?;
    let out = k.run(&["logs", "q"]).await?;
    ensure!(
        !out.success() && out.stderr.contains("does not have a host assigned"),
        "{out:?}"
    );
    agent.abort();
    Ok(())
}
