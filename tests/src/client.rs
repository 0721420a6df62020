//! gRPC clients of the etcd v3 API (the `skiff-proto` stubs) over tonic channels.

use std::time::Duration;

use anyhow::{Context, Result};
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::lease_client::LeaseClient;
use skiff_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use skiff_proto::etcdserverpb::watch_client::WatchClient;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens one HTTP/2 connection to `url` (`http://host:port`).
///
/// # Errors
/// When the URL is malformed or the connection cannot be made within [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str) -> Result<Channel> {
    Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad endpoint {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// A KV client on `channel`.
pub fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
}

/// A Watch client on `channel`.
pub fn watch(channel: Channel) -> WatchClient<Channel> {
    WatchClient::new(channel)
}

/// A Lease client on `channel`.
pub fn lease(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel)
}

/// A Maintenance client on `channel`.
pub fn maintenance(channel: Channel) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel)
}
