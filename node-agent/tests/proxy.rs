//! The service proxy against real nftables in network namespaces (run as root; skipped
//! otherwise).
//!
//! `service_traffic_is_balanced_rescaled_rejected_and_removed` drives the sync and apply
//! layers with in-memory objects and real connections; `run_follows_watches_and_removes_its_table`
//! drives [`proxy::run_with`] from a fake API server.
//!
//! The first test builds a small node out of network namespaces, all named `skp<pid>-…` and
//! removed by name when the test ends, pass or fail:
//!
//! ```text
//!   skp<pid>a-up: 10.251.0.2, outside the cluster: the node's default route; a client
//!   └── veth ── skp<pid>a-node: up0 10.251.0.1/30, br0 10.250.0.1/24, ip_forward on,
//!       │                     the proxy's table
//!       ├── veth ── skp<pid>a-p1: 10.250.0.2, TCP :8080 answers "pod1"
//!       ├── veth ── skp<pid>a-p2: 10.250.0.3, TCP :8080 answers "pod2"
//!       └── veth ── skp<pid>a-p3: 10.250.0.4, a client pod
//! ```
//!
//! The Service `default/web` (ClusterIP 10.96.77.10:80, nodePort 30080 → targetPort 8080)
//! is programmed from in-memory Service and EndpointSlice objects through [`Syncer`], with
//! `nft` run inside the node namespace. Servers and clients are threads that entered a
//! namespace with setns(2); every connection has a timeout.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nix::sched::CloneFlags;
use skiff_node_agent::proxy::{
    self, Nft, ProxyConfig, ProxyMetrics, RenderConfig, SyncMode, Syncer,
};
use tokio_util::sync::CancellationToken;

const CLUSTER_IP: &str = "10.96.77.10";
const NODE_IP: &str = "10.250.0.1";
const NODE_UP_IP: &str = "10.251.0.1";
const TABLE: &str = "skiff_proxy";
const TIMEOUT: Duration = Duration::from_millis(1500);

/// Network namespaces removed by name on drop.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        // A leftover of the same name (a pid reused after a crash) goes first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// TCP servers in pod namespaces, stopped and joined on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Serves `reply` on 0.0.0.0:8080 inside `netns`, once the listener is bound.
    fn spawn(&mut self, netns: &str, reply: &'static str) {
        let (stop, netns) = (self.stop.clone(), netns.to_owned());
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        self.threads.push(std::thread::spawn(move || {
            enter(&netns);
            let listener = TcpListener::bind("0.0.0.0:8080").expect("bind :8080 in the pod");
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            bound_tx.send(()).expect("test waits for the listener");
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(reply.as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept in {netns}: {e}"),
                }
            }
        }));
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server bound");
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Moves the calling thread into the named network namespace.
fn enter(netns: &str) {
    let file = File::open(format!("/run/netns/{netns}")).expect("open the netns");
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One connection from inside `netns` to `addr`: what the server said, or why it failed.
fn connect(netns: &str, addr: &str) -> Result<String, ErrorKind> {
    let (netns, addr): (String, SocketAddr) = (netns.to_owned(), addr.parse().unwrap());
    std::thread::spawn(move || {
        enter(&netns);
        let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.kind())?;
        conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.kind())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).map_err(|e| e.kind())?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

/// Which replies (or errors) `n` connections got.
fn tally(netns: &str, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = match connect(netns, addr) {
            Ok(reply) => reply,
            Err(kind) => format!("error: {kind:?}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

fn web_service() -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            cluster_ip: Some(CLUSTER_IP.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port: Some(30080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn web_slice(endpoints: &[(&str, bool)]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web-x1".into()),
            labels: Some([("kubernetes.io/service-name".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|&(ip, ready)| Endpoint {
                addresses: vec![ip.into()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(ready),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: the proxy test needs root");
        return false;
    }
    let have = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("nft", "--version") || !have("ip", "-V") {
        eprintln!("skipping: the proxy test needs nft and ip");
        return false;
    }
    true
}

fn is_pods(seen: &BTreeMap<String, usize>, pods: &[&str]) -> bool {
    seen.keys().map(String::as_str).eq(pods.iter().copied())
}

#[test]
fn service_traffic_is_balanced_rescaled_rejected_and_removed() {
    if !can_run() {
        return;
    }
    let mut namespaces = Namespaces { names: Vec::new() };
    let prefix = format!("skp{}a", std::process::id());
    let node = namespaces.add(format!("{prefix}-node"));
    ip(&["-n", &node, "link", "set", "lo", "up"]);
    ip(&["-n", &node, "link", "add", "br0", "type", "bridge"]);
    ip(&[
        "-n",
        &node,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "br0",
    ]);
    ip(&["-n", &node, "link", "set", "br0", "up"]);
    ip(&[
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    // Outside the cluster, where the node's default route (and so unknown ClusterIPs) go.
    let outside = namespaces.add(format!("{prefix}-up"));
    ip(&["-n", &outside, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
        &outside,
    ]);
    ip(&[
        "-n",
        &node,
        "addr",
        "add",
        &format!("{NODE_UP_IP}/30"),
        "dev",
        "up0",
    ]);
    ip(&["-n", &node, "link", "set", "up0", "up"]);
    ip(&["-n", &node, "route", "add", "default", "via", "10.251.0.2"]);
    ip(&[
        "-n",
        &outside,
        "addr",
        "add",
        "10.251.0.2/30",
        "dev",
        "eth0",
    ]);
    ip(&["-n", &outside, "link", "set", "eth0", "up"]);
    ip(&[
        "-n",
        &outside,
        "route",
        "add",
        "10.250.0.0/24",
        "via",
        NODE_UP_IP,
    ]);
    // A router: what it has no route for is answered with ICMP unreachable, not dropped.
    ip(&[
        "netns",
        "exec",
        &outside,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let mut pods = Vec::new();
    for i in 1..=3 {
        let pod = namespaces.add(format!("{prefix}-p{i}"));
        let veth = format!("vp{i}");
        ip(&["-n", &pod, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            &pod,
        ]);
        ip(&["-n", &node, "link", "set", &veth, "master", "br0", "up"]);
        ip(&[
            "-n",
            &pod,
            "addr",
            "add",
            &format!("10.250.0.{}/24", i + 1),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &pod, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod, "route", "add", "default", "via", NODE_IP]);
        pods.push(pod);
    }
    let client_pod = pods[2].clone();
    let mut servers = Servers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    servers.spawn(&pods[0], "pod1");
    servers.spawn(&pods[1], "pod2");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nft = Nft::in_netns(&node);
    let metrics = Arc::new(ProxyMetrics::default());
    let mut syncer = Syncer::new(nft.clone(), RenderConfig::new(TABLE), metrics.clone()).unwrap();
    let svc = web_service();
    let cluster = format!("{CLUSTER_IP}:80");
    let node_port = format!("{NODE_IP}:30080");
    let outside_node_port = format!("{NODE_UP_IP}:30080");
    let paths = [
        (&node, &cluster),
        (&client_pod, &cluster),
        (&client_pod, &node_port),
        (&outside, &outside_node_port),
    ];

    // Two ready endpoints: both answer: from the node, from a pod, through the node port
    // from a pod and from outside.
    let both = web_slice(&[("10.250.0.2", true), ("10.250.0.3", true)]);
    let report = rt
        .block_on(syncer.sync([&svc], [&both], SyncMode::Incremental))
        .unwrap();
    assert!(
        report.full && report.applied,
        "the first sync rebuilds the table: {report:?}"
    );
    for (from, addr) in paths {
        let seen = tally(from, addr, 30);
        assert!(
            is_pods(&seen, &["pod1", "pod2"]),
            "from {from} to {addr}: {seen:?}"
        );
    }
    // A port the ClusterIP does not serve is refused, not left to time out.
    let other_port = format!("{CLUSTER_IP}:81");
    assert_eq!(
        connect(&client_pod, &other_port),
        Err(ErrorKind::ConnectionRefused)
    );

    // Scaled to one (pod2 not ready): an incremental update, and only pod1 answers.
    let one = web_slice(&[("10.250.0.2", true), ("10.250.0.3", false)]);
    let report = rt
        .block_on(syncer.sync([&svc], [&one], SyncMode::Incremental))
        .unwrap();
    assert!(!report.full && report.applied, "{report:?}");
    let listing = rt.block_on(nft.list_table(TABLE)).unwrap();
    assert_eq!(listing.matches("chain ep-").count(), 1, "{listing}");
    for from in [&node, &client_pod] {
        let seen = tally(from, &cluster, 15);
        assert!(is_pods(&seen, &["pod1"]), "from {from}: {seen:?}");
    }
    // Nothing changed: no script; a full resync of the same state keeps it working.
    let report = rt
        .block_on(syncer.sync([&svc], [&one], SyncMode::Incremental))
        .unwrap();
    assert!(!report.applied, "{report:?}");
    let report = rt
        .block_on(syncer.sync([&svc], [&one], SyncMode::Full))
        .unwrap();
    assert!(report.full, "{report:?}");
    assert_eq!(connect(&client_pod, &cluster).as_deref(), Ok("pod1"));

    // No ready endpoint: new connections are rejected at once, not dropped.
    let none = web_slice(&[("10.250.0.2", false), ("10.250.0.3", false)]);
    rt.block_on(syncer.sync([&svc], [&none], SyncMode::Incremental))
        .unwrap();
    for (from, addr) in paths {
        assert_eq!(
            connect(from, addr),
            Err(ErrorKind::ConnectionRefused),
            "from {from} to {addr}"
        );
    }

    // Someone removed the table behind the proxy's back: the incremental update fails and
    // the sync falls back to a full rebuild at once.
    rt.block_on(nft.delete_table(TABLE)).unwrap();
    let report = rt
        .block_on(syncer.sync([&svc], [&one], SyncMode::Incremental))
        .unwrap();
    assert!(report.full, "{report:?}");
    assert_eq!(metrics.snapshot().sync_errors, 1);
    assert_eq!(connect(&client_pod, &cluster).as_deref(), Ok("pod1"));

    // Back to two, then the Service is removed: nothing answers and its chains are gone.
    rt.block_on(syncer.sync([&svc], [&both], SyncMode::Incremental))
        .unwrap();
    let seen = tally(&client_pod, &cluster, 20);
    assert!(is_pods(&seen, &["pod1", "pod2"]), "{seen:?}");
    let report = rt
        .block_on(syncer.sync([], [&both], SyncMode::Incremental))
        .unwrap();
    assert!(!report.full, "{report:?}");
    for (from, addr) in paths {
        let result = connect(from, addr);
        // Refused by the node (a node port nobody serves) or unreachable past it (a
        // ClusterIP nobody knows), but never answered and never left to time out.
        let refused = [
            ErrorKind::ConnectionRefused,
            ErrorKind::NetworkUnreachable,
            ErrorKind::HostUnreachable,
        ];
        assert!(
            result.as_ref().is_err_and(|kind| refused.contains(kind)),
            "from {from} to {addr} after removal: {result:?}"
        );
    }
    let listing = rt.block_on(nft.list_table(TABLE)).unwrap();
    assert!(
        !listing.contains("chain svc-") && !listing.contains("chain ep-"),
        "{listing}"
    );
    assert!(!listing.contains(CLUSTER_IP), "{listing}");

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.sync_errors, 1, "{snapshot:?}");
    assert_eq!(snapshot.full_syncs, 3, "{snapshot:?}");
    assert_eq!(snapshot.service_ports, 0, "{snapshot:?}");

    // Teardown removes the table; a second teardown is harmless.
    rt.block_on(syncer.teardown()).unwrap();
    rt.block_on(syncer.teardown()).unwrap();
    let tables = rt.block_on(nft.list_tables()).unwrap();
    assert!(!tables.contains(TABLE), "{tables}");

    drop(servers);
    drop(namespaces);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&prefix),
        "namespaces left behind"
    );
}

/// Just enough of an API server for kube-runtime's watchers of Services and EndpointSlices:
/// lists are empty, and every watch replays the events pushed so far, then follows.
#[derive(Clone)]
struct FakeApi {
    services: Arc<tokio::sync::watch::Sender<Vec<Bytes>>>,
    slices: Arc<tokio::sync::watch::Sender<Vec<Bytes>>>,
}

type FakeBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl FakeApi {
    fn new() -> FakeApi {
        FakeApi {
            services: Arc::new(tokio::sync::watch::channel(Vec::new()).0),
            slices: Arc::new(tokio::sync::watch::channel(Vec::new()).0),
        }
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let response = api.respond(req.uri());
            async move { Ok::<_, Infallible>(response) }
        });
        kube::Client::new(service, "default")
    }

    /// Pushes a watch event (`ADDED`, `MODIFIED`, `DELETED`) for a Service or a slice.
    fn push<K: serde::Serialize>(&self, kind: &str, object: &K) {
        let events = if kind.starts_with("Service") {
            &self.services
        } else {
            &self.slices
        };
        let type_ = kind
            .split(':')
            .nth(1)
            .expect("kind is Service:TYPE or Slice:TYPE");
        let mut line =
            serde_json::to_vec(&serde_json::json!({ "type": type_, "object": object })).unwrap();
        line.push(b'\n');
        events.send_modify(|events| events.push(Bytes::from(line)));
    }

    fn respond(&self, uri: &http::Uri) -> http::Response<FakeBody> {
        let (events, list_kind, api_version) = match uri.path() {
            "/api/v1/services" => (&self.services, "ServiceList", "v1"),
            "/apis/discovery.k8s.io/v1/endpointslices" => {
                (&self.slices, "EndpointSliceList", "discovery.k8s.io/v1")
            }
            _ => {
                let body = http_body_util::Full::new(Bytes::from_static(b"{}"));
                return http::Response::builder()
                    .status(404)
                    .body(body.boxed())
                    .unwrap();
            }
        };
        if !uri.query().unwrap_or("").contains("watch=true") {
            let list = serde_json::json!({
                "apiVersion": api_version, "kind": list_kind,
                "metadata": { "resourceVersion": "1" }, "items": [],
            });
            let body = http_body_util::Full::new(Bytes::from(list.to_string()));
            return http::Response::new(body.boxed());
        }
        let mut rx = events.subscribe();
        let (mut tx, body) = http_body_util::Channel::<Bytes, Infallible>::new(16);
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let pending: Vec<u8> = {
                    let events = rx.borrow_and_update();
                    let pending = events[sent..].concat();
                    sent = events.len();
                    pending
                };
                if !pending.is_empty() && tx.send_data(Bytes::from(pending)).await.is_err() {
                    return; // The watch was dropped.
                }
                if rx.changed().await.is_err() {
                    return; // The fake API was dropped.
                }
            }
        });
        http::Response::new(body.boxed())
    }
}

/// Polls `nft list table` in `netns` until `check` holds (or fails after 10 s).
async fn wait_for_table(nft: &Nft, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listing = nft.list_table(TABLE).await.unwrap_or_default();
        if check(&listing) {
            return listing;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{listing}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn run_follows_watches_and_removes_its_table() {
    if !can_run() {
        return;
    }
    let mut namespaces = Namespaces { names: Vec::new() };
    let node = namespaces.add(format!("skp{}b-node", std::process::id()));
    ip(&["-n", &node, "link", "set", "lo", "up"]);

    let api = FakeApi::new();
    let nft = Nft::in_netns(&node);
    let metrics = Arc::new(ProxyMetrics::default());
    let shutdown = CancellationToken::new();
    let config = ProxyConfig {
        node_name: "node-1".into(),
        ..ProxyConfig::default()
    };
    let proxy = tokio::spawn(proxy::run_with(
        api.client(),
        config,
        nft.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    // Both caches listed (empty): the first, full sync builds the skeleton.
    wait_for_table(&nft, "the skeleton", |t| t.contains("chain nat-prerouting")).await;

    let mut svc = web_service();
    svc.metadata.resource_version = Some("2".into());
    api.push("Service:ADDED", &svc);
    let element = format!("{CLUSTER_IP} . tcp . 80 : goto svc-");
    let listing = wait_for_table(&nft, "the service without endpoints", |t| {
        t.contains(&format!("{CLUSTER_IP} . tcp . 80 : goto reject-chain"))
    })
    .await;
    assert!(!listing.contains(&element), "{listing}");

    // A burst of slice updates is coalesced into far fewer syncs.
    let syncs_before = metrics.snapshot().syncs;
    for i in 0..20 {
        let mut slice = web_slice(&[("10.250.0.2", true), ("10.250.0.3", i % 2 == 1)]);
        slice.metadata.resource_version = Some((3 + i).to_string());
        api.push(
            if i == 0 {
                "Slice:ADDED"
            } else {
                "Slice:MODIFIED"
            },
            &slice,
        );
    }
    wait_for_table(&nft, "both endpoints", |t| {
        t.contains(&element) && t.contains("dnat to 10.250.0.3:8080")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syncs = metrics.snapshot().syncs - syncs_before;
    assert!(
        (1..=3).contains(&syncs),
        "20 updates in a burst took {syncs} syncs"
    );

    svc.metadata.resource_version = Some("30".into());
    api.push("Service:DELETED", &svc);
    wait_for_table(&nft, "the service's removal", |t| {
        t.contains("chain nat-prerouting") && !t.contains(CLUSTER_IP) && !t.contains("chain svc-")
    })
    .await;

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), proxy).await;
    result
        .expect("run stops on shutdown")
        .expect("run task")
        .expect("run returns Ok");
    let tables = nft.list_tables().await.unwrap();
    assert!(
        !tables.contains(TABLE),
        "the table outlived the proxy: {tables}"
    );
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.sync_errors, 0, "{snapshot:?}");
}
