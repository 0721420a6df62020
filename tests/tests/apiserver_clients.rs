//! Programs against a running `skiff server`: kube-rs (list, paging, watch resumed at a
//! resourceVersion, 410 after the API server restarts) and the skiff.v1 gRPC watch.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::watch_event::Type as EvType;
use skiff_proto::api::{
    CreateRequest, DeleteRequest, PatchRequest, PatchType, Resource, WatchRequest,
};
use skiff_tests::server::Server;

async fn kube_client(server: &Server) -> Result<Client> {
    let kc = Kubeconfig::read_from(server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "data": {"v": v},
    }))
    .expect("valid ConfigMap")
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> Result<WatchEvent<ConfigMap>> {
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .context("no watch event in 20 s")?;
    Ok(ev.context("watch ended")??)
}

fn describe(ev: &WatchEvent<ConfigMap>) -> String {
    match ev {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => {
            format!("MODIFIED {}", o.metadata.name.clone().unwrap_or_default())
        }
        WatchEvent::Deleted(o) => {
            format!("DELETED {}", o.metadata.name.clone().unwrap_or_default())
        }
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_pages_watches_resumes_and_handles_410() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;
    let client = kube_client(&server).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "0"))
            .await?;
    }
    let all = cms
        .list(&ListParams::default().labels("app=kube-rs"))
        .await?;
    ensure!(all.items.len() == 5, "{} items", all.items.len());
    // Paging: 2 + 2 + 1, all from one revision.
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels("app=kube-rs").limit(2);
    loop {
        let page = cms.list(&lp).await?;
        ensure!(page.items.len() <= 2);
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    ensure!(names == ["c0", "c1", "c2", "c3", "c4"], "{names:?}");
    let bad = cms
        .list(&ListParams::default().continue_token("not-a-token"))
        .await;
    ensure!(
        matches!(bad, Err(kube::Error::Api(ref e)) if e.code == 400),
        "{bad:?}"
    );

    // Watch from the list's resourceVersion, stop, change things, resume where we were.
    let rv = all.metadata.resource_version.clone().context("list rv")?;
    let mut stream = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    let mut c0 = cms.get("c0").await?;
    c0.data = Some([("v".to_string(), "1".to_string())].into());
    cms.replace("c0", &PostParams::default(), &c0).await?;
    let ev = next_event(&mut stream).await?;
    ensure!(describe(&ev) == "MODIFIED c0", "{}", describe(&ev));
    let WatchEvent::Modified(seen) = ev else {
        unreachable!()
    };
    let resume_at = seen.metadata.resource_version.clone().context("event rv")?;
    drop(stream);
    cms.delete("c1", &Default::default()).await?;
    cms.create(&PostParams::default(), &cm("c5", "0")).await?;
    let mut stream = cms
        .watch(&WatchParams::default(), &resume_at)
        .await?
        .boxed();
    let got = vec![
        describe(&next_event(&mut stream).await?),
        describe(&next_event(&mut stream).await?),
    ];
    ensure!(got == ["DELETED c1", "ADDED c5"], "{got:?}");
    drop(stream);

    // Stale update: 409 Conflict.
    let stale = cms.replace("c0", &PostParams::default(), &c0).await;
    ensure!(
        matches!(stale, Err(kube::Error::Api(ref e)) if e.code == 409 && e.reason == "Conflict"),
        "{stale:?}"
    );

    // The API server restarts: its watch cache starts over, so an old resourceVersion is
    // 410 Gone; kube-runtime's watcher relists and carries on.
    server.kill()?;
    server.spawn()?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let client = kube_client(&server).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut stream = cms.watch(&WatchParams::default(), &rv).await?.boxed();
    let ev = next_event(&mut stream).await?;
    ensure!(
        matches!(ev, WatchEvent::Error(ref e) if e.code == 410),
        "{}",
        describe(&ev)
    );

    let watcher = kube::runtime::watcher(
        cms.clone(),
        kube::runtime::watcher::Config::default().labels("app=kube-rs"),
    );
    let mut objects = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watcher));
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 5 {
        let o = tokio::time::timeout(Duration::from_secs(20), objects.try_next())
            .await??
            .context("watcher ended")?;
        seen.insert(o.metadata.name.unwrap_or_default());
    }
    ensure!(
        seen.iter().cloned().collect::<Vec<_>>() == ["c0", "c2", "c3", "c4", "c5"],
        "{seen:?}"
    );
    Ok(())
}

fn cm_res() -> Option<Resource> {
    Some(Resource {
        group: String::new(),
        version: "v1".into(),
        resource: "configmaps".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_streams_resumes_and_reports_expiry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;
    let mut c = ApiClient::connect(server.url()).await?;
    let watch_req = |rv: &str, bookmarks: bool| WatchRequest {
        resource: cm_res(),
        namespace: "default".into(),
        resource_version: rv.to_string(),
        bookmarks,
        ..Default::default()
    };
    let mut stream = c.watch(watch_req("", true)).await?.into_inner();
    let body = |name: &str| {
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
    };
    let created = c
        .create(CreateRequest {
            resource: cm_res(),
            namespace: "default".into(),
            json: body("g1"),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        created.kind == "ConfigMap" && created.name == "g1" && !created.resource_version.is_empty()
    );
    let patch = br#"{"data":{"k":"w"}}"#.to_vec();
    c.patch(PatchRequest {
        resource: cm_res(),
        namespace: "default".into(),
        name: "g1".into(),
        r#type: PatchType::Merge as i32,
        patch,
        ..Default::default()
    })
    .await?;
    c.delete(DeleteRequest {
        resource: cm_res(),
        namespace: "default".into(),
        name: "g1".into(),
        ..Default::default()
    })
    .await?;

    let mut events = Vec::new();
    while events.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await??
            .context("stream ended")?;
        let t = EvType::try_from(ev.r#type)?;
        if t == EvType::Bookmark {
            continue;
        }
        let o = ev.object.context("object")?;
        let v: serde_json::Value = serde_json::from_slice(&o.json)?;
        ensure!(v["metadata"]["name"] == "g1" && o.resource_version == ev.resource_version);
        events.push((t, ev.resource_version.parse::<i64>()?));
    }
    ensure!(
        events.iter().map(|e| e.0).collect::<Vec<_>>()
            == [EvType::Added, EvType::Modified, EvType::Deleted],
        "{events:?}"
    );
    ensure!(
        events[0].1 < events[1].1 && events[1].1 < events[2].1,
        "{events:?}"
    );
    // A bookmark arrives while idle, at or after the last event.
    let bm = loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await??
            .context("stream ended")?;
        if EvType::try_from(ev.r#type)? == EvType::Bookmark {
            break ev.resource_version.parse::<i64>()?;
        }
    };
    ensure!(bm >= events[2].1, "bookmark {bm} before {events:?}");

    // Resume after the creation: exactly the modification and the deletion.
    let mut resumed = c
        .watch(watch_req(&events[0].1.to_string(), false))
        .await?
        .into_inner();
    for want in [EvType::Modified, EvType::Deleted] {
        let ev = tokio::time::timeout(Duration::from_secs(20), resumed.message())
            .await??
            .context("stream ended")?;
        ensure!(EvType::try_from(ev.r#type)? == want, "{ev:?}");
    }

    // Errors are gRPC codes.
    let dup = c
        .create(CreateRequest {
            resource: cm_res(),
            namespace: "nope".into(),
            json: body("x"),
            ..Default::default()
        })
        .await;
    ensure!(
        matches!(dup, Err(ref s) if s.code() == tonic::Code::NotFound),
        "{dup:?}"
    );

    // After the API server restarts, an old resourceVersion is reported as EXPIRED.
    server.kill()?;
    server.spawn()?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let mut c = ApiClient::connect(server.url()).await?;
    let mut old = c
        .watch(watch_req(&events[0].1.to_string(), false))
        .await?
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(20), old.message())
        .await??
        .context("stream ended")?;
    ensure!(EvType::try_from(ev.r#type)? == EvType::Expired, "{ev:?}");
    ensure!(
        old.message().await?.is_none(),
        "the stream ends after EXPIRED"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_are_unique_and_bindings_happen_once() -> Result<()> {
    use k8s_openapi::api::core::v1::{Binding, Pod, Service};
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        dir.path(),
        &["--service-cluster-ip-range=10.100.0.0/24".to_string()],
    )
    .await?;
    let client = kube_client(&server).await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = |name: &str, ip: Option<&str>| -> Service {
        let mut v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}});
        if let Some(ip) = ip {
            v["spec"]["clusterIP"] = serde_json::json!(ip);
        }
        serde_json::from_value(v).expect("valid Service")
    };
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..20 {
        let s = svcs
            .create(&PostParams::default(), &svc(&format!("s{i}"), None))
            .await?;
        let ip = s.spec.and_then(|s| s.cluster_ip).context("clusterIP")?;
        ensure!(ip.starts_with("10.100.0.") && ip != "10.100.0.1", "{ip}");
        ensure!(ips.insert(ip.clone()), "{ip} handed out twice");
    }
    let taken = ips.iter().next().cloned().context("an ip")?;
    let dup = svcs
        .create(&PostParams::default(), &svc("dup", Some(&taken)))
        .await;
    ensure!(
        matches!(dup, Err(kube::Error::Api(ref e)) if e.code == 422 && e.message.contains("already allocated")),
        "{dup:?}"
    );
    let out = svcs
        .create(&PostParams::default(), &svc("out", Some("10.200.0.5")))
        .await;
    ensure!(
        matches!(out, Err(kube::Error::Api(ref e)) if e.code == 422),
        "{out:?}"
    );
    // A deleted Service's address can be taken again.
    let victim = svcs
        .get("s0")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("ip")?;
    svcs.delete("s0", &Default::default()).await?;
    svcs.create(&PostParams::default(), &svc("again", Some(&victim)))
        .await?;

    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )?;
    let created = pods.create(&PostParams::default(), &pod).await?;
    let spec = created.spec.clone().context("spec")?;
    ensure!(
        spec.restart_policy.as_deref() == Some("Always")
            && spec.scheduler_name.as_deref() == Some("default-scheduler")
    );
    ensure!(created.status.and_then(|s| s.phase).as_deref() == Some("Pending"));
    let binding = |node: &str| -> Binding {
        serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}})).expect("valid Binding")
    };
    pods.create_subresource::<Binding, serde_json::Value>(
        "binding",
        "p",
        &PostParams::default(),
        &binding("n1"),
    )
    .await?;
    let bound = pods.get("p").await?;
    ensure!(bound.spec.and_then(|s| s.node_name).as_deref() == Some("n1"));
    let again = pods
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            "p",
            &PostParams::default(),
            &binding("n2"),
        )
        .await;
    ensure!(
        matches!(again, Err(kube::Error::Api(ref e)) if e.code == 409 && e.message.contains("already assigned")),
        "{again:?}"
    );
    Ok(())
}
