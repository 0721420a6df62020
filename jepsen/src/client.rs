//! The harness's etcd v3 client: one gRPC channel to one member, every call
//! bounded by a timeout, and errors classified by what they tell about the
//! request's outcome.
//!
//! The classification is what makes the history honest: a request that was
//! certainly never sent ([`ClientError::NotSent`], e.g. connection refused)
//! did not take effect and is a `fail`; anything else that went wrong after
//! sending — a timeout, a dropped connection, "leader changed" — may or may
//! not have taken effect, and a write that ends so is an `info`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use skiff_proto::etcdserverpb::{
    cluster_client::ClusterClient, compare, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, request_op, watch_client::WatchClient,
    CompactionRequest, Compare, DefragmentRequest, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, Member, MemberAddRequest, MemberListRequest,
    MemberRemoveRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, StatusRequest,
    StatusResponse, TxnRequest, TxnResponse,
};
use skiff_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

use crate::testbed::{gateway_of, is_allowed_target};

/// Why a call failed, by what it means for the request's outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request was never sent (no connection could be made): it did not
    /// take effect.
    #[error("not sent: {0}")]
    NotSent(String),
    /// No answer within the timeout: the outcome is unknown.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server or the connection answered with an error after the
    /// request may have been sent: the outcome is unknown.
    #[error("{code:?}: {message}")]
    Status {
        /// gRPC code.
        code: tonic::Code,
        /// Message.
        message: String,
    },
}

impl ClientError {
    /// Whether the request certainly did not take effect.
    pub fn is_definite(&self) -> bool {
        match self {
            ClientError::NotSent(_) => true,
            ClientError::Timeout(_) => false,
            // etcd refuses these before proposing anything.
            ClientError::Status { code, message } => {
                matches!(
                    code,
                    tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::OutOfRange
                        | tonic::Code::NotFound
                        | tonic::Code::Unimplemented
                        | tonic::Code::ResourceExhausted
                ) || message.contains("required revision has been compacted")
            }
        }
    }

    fn from_status(status: tonic::Status) -> Self {
        let mut text = status.message().to_owned();
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(&status);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        let lower = text.to_lowercase();
        if status.code() == tonic::Code::Unavailable
            && (lower.contains("tcp connect error")
                || lower.contains("connection refused")
                || lower.contains("error trying to connect")
                || lower.contains("no route to host")
                || lower.contains("cannot assign requested address"))
        {
            return ClientError::NotSent(text);
        }
        ClientError::Status {
            code: status.code(),
            message: text,
        }
    }
}

/// How long a call that could not connect waits before reporting it.
pub const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// The result of a call.
pub type ClientResult<T> = Result<T, ClientError>;

/// A client of one member. Cheap to clone (the channel is shared).
#[derive(Clone, Debug)]
pub struct Client {
    /// The member's client address.
    pub addr: SocketAddr,
    channel: Channel,
    timeout: Duration,
}

pub use skiff_proto::prefix_end;

impl Client {
    /// A lazily connecting client of `ip:port`, each call bounded by
    /// `timeout` (connecting by at most half of it).
    ///
    /// # Panics
    /// If `ip` is outside loopback and the namespace subnet: the harness
    /// must never send traffic anywhere else.
    pub fn new(ip: Ipv4Addr, port: u16, timeout: Duration) -> Self {
        assert!(
            is_allowed_target(ip),
            "refusing to target {ip}: only loopback and the namespace subnet"
        );
        let addr = SocketAddr::from((ip, port));
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address is a valid URI")
            .connect_timeout(timeout / 2)
            .tcp_nodelay(true)
            // From the bridge address only: with the bridge gone, connecting
            // fails rather than routing the subnet out of the machine.
            .local_address(gateway_of(ip).map(IpAddr::V4));
        Self {
            addr,
            channel: endpoint.connect_lazy(),
            timeout,
        }
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same member with another timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    async fn call<T, F>(&self, fut: F) -> ClientResult<T>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(Err(status)) => {
                let err = ClientError::from_status(status);
                if matches!(err, ClientError::NotSent(_)) {
                    // A refused connection fails at once; pausing here keeps
                    // clients of a dead member from spinning through the
                    // run's op budget.
                    tokio::time::sleep(REFUSED_PAUSE).await;
                }
                Err(err)
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// The Watch service.
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }

    /// A linearizable (or, with `serializable`, member-local) range.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn range(&self, req: RangeRequest) -> ClientResult<RangeResponse> {
        let mut kv = self.kv();
        self.call(kv.range(req)).await
    }

    /// A linearizable get of one key: the key-value, if present, and the
    /// response's header revision.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn get(&self, key: &str) -> ClientResult<(Option<KeyValue>, i64)> {
        let r = self
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await?;
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().next(), rev))
    }

    /// A put; returns the revision it created.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn put(&self, key: &str, value: &str, lease: i64) -> ClientResult<i64> {
        let mut kv = self.kv();
        let r = self
            .call(kv.put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                lease,
                ..Default::default()
            }))
            .await?;
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// Deletes one key; returns how many keys were deleted and the
    /// response's revision (the delete's revision if one was deleted).
    ///
    /// # Errors
    /// As the call failed.
    pub async fn delete(&self, key: &str) -> ClientResult<(i64, i64)> {
        let mut kv = self.kv();
        let r = self
            .call(kv.delete_range(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }))
            .await?;
        Ok((r.deleted, r.header.map_or(0, |h| h.revision)))
    }

    /// A transaction.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn txn(&self, req: TxnRequest) -> ClientResult<TxnResponse> {
        let mut kv = self.kv();
        self.call(kv.txn(req)).await
    }

    /// Compacts the history up to `revision` (physically).
    ///
    /// # Errors
    /// As the call failed.
    pub async fn compact(&self, revision: i64) -> ClientResult<()> {
        let mut kv = self.kv();
        self.call(kv.compact(CompactionRequest {
            revision,
            physical: true,
        }))
        .await
        .map(|_| ())
    }

    /// Defragments this member's backend.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn defragment(&self) -> ClientResult<()> {
        let mut m = MaintenanceClient::new(self.channel.clone());
        self.call(m.defragment(DefragmentRequest {}))
            .await
            .map(|_| ())
    }

    /// This member's status (its id, the leader it knows).
    ///
    /// # Errors
    /// As the call failed.
    pub async fn status(&self) -> ClientResult<StatusResponse> {
        let mut m = MaintenanceClient::new(self.channel.clone());
        self.call(m.status(StatusRequest {})).await
    }

    /// The cluster's members.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn member_list(&self) -> ClientResult<Vec<Member>> {
        let mut c = ClusterClient::new(self.channel.clone());
        self.call(c.member_list(MemberListRequest { linearizable: true }))
            .await
            .map(|r| r.members)
    }

    /// Adds a (voting) member with `peer_url`; returns its id.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn member_add(&self, peer_url: &str) -> ClientResult<u64> {
        let mut c = ClusterClient::new(self.channel.clone());
        let r = self
            .call(c.member_add(MemberAddRequest {
                peer_ur_ls: vec![peer_url.to_owned()],
                is_learner: false,
            }))
            .await?;
        Ok(r.member.map_or(0, |m| m.id))
    }

    /// Removes a member.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn member_remove(&self, id: u64) -> ClientResult<()> {
        let mut c = ClusterClient::new(self.channel.clone());
        self.call(c.member_remove(MemberRemoveRequest { id }))
            .await
            .map(|_| ())
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn lease_grant(&self, ttl: i64) -> ClientResult<i64> {
        let mut l = LeaseClient::new(self.channel.clone());
        let r = self
            .call(l.lease_grant(LeaseGrantRequest { ttl, id: 0 }))
            .await?;
        Ok(r.id)
    }

    /// Grants a lease of `ttl` seconds; returns its id and the TTL the
    /// server granted.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn lease_grant_with_ttl(&self, ttl: i64) -> ClientResult<(i64, i64)> {
        let mut l = LeaseClient::new(self.channel.clone());
        let r = self
            .call(l.lease_grant(LeaseGrantRequest { ttl, id: 0 }))
            .await?;
        Ok((r.id, r.ttl))
    }

    /// Renews a lease once: opens a keep-alive stream, sends one request and
    /// waits for its response (all within the timeout), then closes the
    /// stream. Returns the TTL the server answered (`0` or less: the lease
    /// was not found).
    ///
    /// # Errors
    /// As the call failed; a stream that ends without a response is a
    /// [`ClientError::Status`] (`Unavailable`, outcome unknown).
    pub async fn lease_keep_alive_once(&self, id: i64) -> ClientResult<i64> {
        let mut l = LeaseClient::new(self.channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // The request stream stays open until the response arrived (`tx`
        // lives to the end of this function), so the server never sees the
        // stream end before it answered.
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Err(ClientError::NotSent(
                "keep-alive request channel closed".into(),
            ));
        }
        let ended = || ClientError::Status {
            code: tonic::Code::Unavailable,
            message: "keep-alive stream ended without a response".into(),
        };
        let exchange = async {
            let mut responses = l
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let first = responses.message().await?;
            Ok::<_, tonic::Status>(tonic::Response::new(first))
        };
        let r = self.call(exchange).await?;
        drop(tx);
        r.map(|r| r.ttl).ok_or_else(ended)
    }

    /// Revokes a lease.
    ///
    /// # Errors
    /// As the call failed.
    pub async fn lease_revoke(&self, id: i64) -> ClientResult<()> {
        let mut l = LeaseClient::new(self.channel.clone());
        self.call(l.lease_revoke(LeaseRevokeRequest { id }))
            .await
            .map(|_| ())
    }
}

/// Compare builders for transactions.
pub mod cmp {
    use super::*;

    fn base(key: &str, result: compare::CompareResult, target: compare::CompareTarget) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// `value(key) == value`.
    pub fn value_eq(key: &str, value: &str) -> Compare {
        let mut c = base(
            key,
            compare::CompareResult::Equal,
            compare::CompareTarget::Value,
        );
        c.target_union = Some(compare::TargetUnion::Value(value.as_bytes().to_vec()));
        c
    }

    /// `version(key) == 0`: the key does not exist.
    pub fn absent(key: &str) -> Compare {
        let mut c = base(
            key,
            compare::CompareResult::Equal,
            compare::CompareTarget::Version,
        );
        c.target_union = Some(compare::TargetUnion::Version(0));
        c
    }

    /// `mod_revision(key) == rev`.
    pub fn mod_eq(key: &str, rev: i64) -> Compare {
        let mut c = base(
            key,
            compare::CompareResult::Equal,
            compare::CompareTarget::Mod,
        );
        c.target_union = Some(compare::TargetUnion::ModRevision(rev));
        c
    }

    /// `create_revision(key) == rev`.
    pub fn create_eq(key: &str, rev: i64) -> Compare {
        let mut c = base(
            key,
            compare::CompareResult::Equal,
            compare::CompareTarget::Create,
        );
        c.target_union = Some(compare::TargetUnion::CreateRevision(rev));
        c
    }
}

/// Request-op builders for transactions.
pub mod op {
    use super::*;

    /// A put.
    pub fn put(key: &str, value: &str, lease: i64) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                lease,
                ..Default::default()
            })),
        }
    }

    /// A get of one key.
    pub fn get(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    /// A delete of one key.
    pub fn delete(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn refused_connections_are_definite_timeouts_are_not() {
        assert!(ClientError::NotSent("x".into()).is_definite());
        assert!(!ClientError::Timeout(Duration::from_secs(1)).is_definite());
        let unknown = ClientError::Status {
            code: tonic::Code::Unavailable,
            message: "etcdserver: leader changed".into(),
        };
        assert!(!unknown.is_definite());
    }

    #[tokio::test]
    async fn a_closed_port_is_not_sent() {
        // Bind and drop to find a closed loopback port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let c = Client::new(Ipv4Addr::LOCALHOST, port, Duration::from_secs(2));
        let err = c.get("k").await.unwrap_err();
        assert!(matches!(err, ClientError::NotSent(_)), "{err:?}");
    }
}
