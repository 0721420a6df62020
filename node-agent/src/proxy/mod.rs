//! The service proxy (kube-proxy role): Services and EndpointSlices → nftables DNAT.
//!
//! [`run`] watches Services and `discovery.k8s.io/v1` EndpointSlices with kube-runtime
//! reflectors and keeps one nftables table (family `ip`, by default `skiff_proxy`) in step
//! with them. The table is the proxy's alone: a verdict map of ClusterIP . protocol . port
//! (and one of protocol . node port for node-local addresses) jumps to a chain per service
//! port, which picks a ready endpoint at random and DNATs to it; service ports without
//! endpoints are rejected; all service traffic is masqueraded. See [`render`] for the
//! table's layout.
//!
//! The first sync and one every [`ProxyConfig::sync_period`] rebuild the table in one
//! transaction; in between, each burst of changes (coalesced for [`schedule::DEBOUNCE`])
//! becomes one transaction that touches only the affected chains and map elements. The
//! table is removed on shutdown.
//!
//! # Layout
//! - [`state`]: the desired state built from API objects (pure).
//! - [`names`]: stable, valid chain names.
//! - [`render`]: the desired state as nft scripts, full or incremental (pure).
//! - [`nft`]: the apply layer, `nft -f -`, optionally in a network namespace.
//! - [`sync`]: the [`Syncer`], remembering what the table holds.
//! - [`schedule`]: debounce, periodic resync and backoff timing.
//! - [`metrics`]: counters about syncs.
//! - [`error`]: the module's error type.

pub mod error;
pub mod metrics;
pub mod names;
pub mod nft;
pub mod render;
pub mod schedule;
pub mod state;
pub mod sync;

use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use error::Error;
pub use metrics::{MetricsSnapshot, ProxyMetrics};
pub use nft::Nft;
pub use render::{render, RenderConfig};
pub use state::ProxyState;
pub use sync::{SyncMode, SyncReport, Syncer};

/// The proxy's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// This node's name (for logs; endpoints are not filtered by node).
    pub node_name: String,
    /// The addresses node ports are served on. Empty means every local address except
    /// loopback (`fib daddr type local`); loopback addresses are never used, so
    /// `route_localnet` is not needed.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pods' CIDR, e.g. `10.244.0.0/16`. Informational for now: all service traffic is
    /// masqueraded (kube-proxy's masquerade-all), so no rule depends on it.
    pub cluster_cidr: Option<String>,
    /// The nft table (family `ip`) the proxy owns; default `skiff_proxy`. Letters, digits
    /// and `_`, starting with a letter.
    pub table: String,
    /// How often the table is rebuilt from scratch; default 30 s.
    pub sync_period: Duration,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidr: None,
            table: "skiff_proxy".to_owned(),
            sync_period: Duration::from_secs(30),
        }
    }
}

impl ProxyConfig {
    /// The rendering settings this config implies.
    pub fn render_config(&self) -> RenderConfig {
        RenderConfig {
            table: self.table.clone(),
            nodeport_addresses: self.node_ips.clone(),
        }
    }
}

/// Runs the proxy until `shutdown` is cancelled, then removes its table.
///
/// # Errors
/// An invalid table name; a watch stream that ends; a failure to remove the table on
/// shutdown. Failed syncs are retried with backoff, not returned.
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(
        client,
        config,
        Nft::host(),
        Arc::new(ProxyMetrics::default()),
        shutdown,
    )
    .await
}

/// [`run`] with the apply layer and the counters given: the agent passes the metrics it
/// exports; tests pass an [`Nft`] that works inside a network namespace.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    client: kube::Client,
    config: ProxyConfig,
    nft: Nft,
    metrics: Arc<ProxyMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut syncer = Syncer::new(nft, config.render_config(), metrics)?;
    info!(node = %config.node_name, table = %config.table, sync_period = ?config.sync_period, "service proxy starting");

    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let service_events = reflector::reflector(
        service_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let mut service_events = pin!(service_events);
    let mut slice_events = pin!(slice_events);

    let mut schedule =
        schedule::Schedule::new(Instant::now(), schedule::DEBOUNCE, config.sync_period);
    // No sync before both caches are listed: an empty cache would remove every service.
    let (mut services_listed, mut slices_listed) = (false, false);
    loop {
        let ready = services_listed && slices_listed;
        let deadline = schedule.deadline();
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = service_events.next() => {
                match event.context("the Service watch ended")? {
                    Ok(event) => services_listed |= matches!(event, watcher::Event::InitDone),
                    Err(err) => { warn!(%err, "Service watch failed; retrying"); continue; }
                }
                schedule.changed(Instant::now());
            }
            event = slice_events.next() => {
                match event.context("the EndpointSlice watch ended")? {
                    Ok(event) => slices_listed |= matches!(event, watcher::Event::InitDone),
                    Err(err) => { warn!(%err, "EndpointSlice watch failed; retrying"); continue; }
                }
                schedule.changed(Instant::now());
            }
            () = tokio::time::sleep_until(deadline), if ready => {
                let started = Instant::now();
                let Some(mode) = schedule.due(started) else { continue };
                let ok = sync_once(&mut syncer, &services, &slices, mode).await;
                schedule.finished(Instant::now(), mode, ok);
            }
        }
    }

    info!("service proxy stopping");
    syncer
        .teardown()
        .await
        .context("removing the proxy's nft table")?;
    Ok(())
}

async fn sync_once(
    syncer: &mut Syncer,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    mode: SyncMode,
) -> bool {
    let services = services.state();
    let slices = slices.state();
    match syncer
        .sync(
            services.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
            mode,
        )
        .await
    {
        Ok(report) => {
            debug!(?report, "sync done");
            true
        }
        Err(err) => {
            warn!(%err, ?mode, "proxy sync failed; retrying with a full sync");
            false
        }
    }
}
