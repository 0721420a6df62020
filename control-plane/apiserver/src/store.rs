//! The API server's client of the store: the etcd v3 gRPC API over tonic, with failover
//! across the endpoints given (Skiff store members or real etcd members).
//!
//! Requests go to one endpoint at a time; when it is unreachable or has no leader the
//! request moves to the next endpoint and is retried until [`Store::deadline`] passes.
//! Retrying a write after a broken connection may find that the first attempt landed: our
//! writes are compare-and-swap transactions, so such a retry fails its comparison and the
//! caller reports a conflict; a write is never applied twice and nothing acknowledged is
//! lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use skiff_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use skiff_proto::etcdserverpb::kv_client::KvClient;
use skiff_proto::etcdserverpb::request_op::Request as Op;
use skiff_proto::etcdserverpb::watch_client::WatchClient;
use skiff_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use skiff_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::ApiError;

/// How long one request keeps retrying across endpoints before giving up.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a single attempt on one endpoint may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd error string for a read below the compaction point.
pub const ERR_COMPACTED: &str = "mvcc: required revision has been compacted";
/// The etcd error string for a read above the current revision.
pub const ERR_FUTURE_REV: &str = "mvcc: required revision is a future revision";

/// Errors of store calls.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The revision asked for has been compacted away.
    #[error("the requested revision has been compacted")]
    Compacted,
    /// The revision asked for is newer than the store's.
    #[error("the requested revision is in the future")]
    FutureRevision,
    /// No endpoint answered within the deadline.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (bad request, quota, …).
    #[error("store error: {0}")]
    Rejected(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted => ApiError::expired(
                "The provided resourceVersion is too old: it has been compacted; list again",
            ),
            StoreError::FutureRevision => {
                ApiError::timeout("Too large resource version: the store has not reached it yet")
            }
            StoreError::Unavailable(m) => ApiError::unavailable(format!("store unavailable: {m}")),
            StoreError::Rejected(m) => ApiError::internal(format!("store: {m}")),
        }
    }
}

fn classify(status: &Status) -> Option<StoreError> {
    let msg = status.message();
    if msg.contains(ERR_COMPACTED) {
        return Some(StoreError::Compacted);
    }
    if msg.contains(ERR_FUTURE_REV) {
        return Some(StoreError::FutureRevision);
    }
    match status.code() {
        // Worth another attempt, possibly on another endpoint.
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted => None,
        Code::Cancelled if msg.contains("connection") || msg.contains("transport") => None,
        _ => Some(StoreError::Rejected(msg.to_string())),
    }
}

/// A client of the store's etcd v3 API.
pub struct Store {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    deadline: Duration,
}

/// A key-value pair as read from the store.
pub type Kv = KeyValue;

impl Store {
    /// A client of `endpoints` (`http://host:port`, at least one). Connections are made
    /// lazily, so the store need not be up yet.
    pub fn new(endpoints: &[String]) -> anyhow::Result<Store> {
        anyhow::ensure!(!endpoints.is_empty(), "no store endpoints given");
        let mut channels = Vec::new();
        for url in endpoints {
            let url = if url.contains("://") {
                url.clone()
            } else {
                format!("http://{url}")
            };
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("bad store endpoint {url:?}: {e}"))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        Ok(Store {
            endpoints: endpoints.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// The endpoints this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// How long a request retries before failing with [`StoreError::Unavailable`].
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The channel of the endpoint in use, and its index.
    pub fn channel(&self) -> (usize, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.channels.len();
        (i, self.channels[i].clone())
    }

    /// Moves off endpoint `failed` (if still current) to the next one.
    pub fn rotate(&self, failed: usize) {
        let next = (failed + 1) % self.channels.len();
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    async fn with_retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let _timer = CallTimer { op: what, start };
        let mut backoff = Duration::from_millis(20);
        loop {
            let (i, ch) = self.channel();
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, f(KvClient::new(ch))).await;
            let status = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("attempt timed out"),
            };
            if let Some(e) = classify(&status) {
                return Err(e);
            }
            tracing::debug!(endpoint = %self.endpoints[i], %what, error = %status, "store call failed; retrying");
            if self.channels.len() > 1 {
                self.rotate(i);
            }
            if start.elapsed() + backoff > self.deadline {
                return Err(StoreError::Unavailable(format!(
                    "{what}: {} ({})",
                    status.message(),
                    self.endpoints[i]
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// A range read. `revision` 0 reads the latest; `serializable` reads the member's local
    /// state without a ReadIndex round.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.with_retry("range", |mut c| {
            let req = req.clone();
            async move { c.range(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// One key, linearizably.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<Kv>, i64), StoreError> {
        let resp = self
            .range(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await?;
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        Ok((resp.kvs.into_iter().next(), rev))
    }

    /// The store's current revision, linearizably (a count-only range of one key).
    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        let resp = self
            .range(RangeRequest {
                key: b"/registry/health".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// A transaction.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        self.with_retry("txn", |mut c| {
            let req = req.clone();
            async move { c.txn(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Compacts the store's history up to `revision` (physical compaction not awaited).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.with_retry("compact", |mut c| async move {
            c.compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await
            .map(|_| ())
        })
        .await
    }

    /// A Watch client on the endpoint in use (the caller rotates on failure).
    pub fn watch_client(&self) -> (usize, WatchClient<Channel>) {
        let (i, ch) = self.channel();
        (i, WatchClient::new(ch))
    }
}

/// Records a store call's latency when dropped.
struct CallTimer<'a> {
    op: &'a str,
    start: Instant,
}

impl Drop for CallTimer<'_> {
    fn drop(&mut self) {
        crate::metrics::global().observe_store(self.op, self.start.elapsed());
    }
}

/// `key`'s create_revision equals `rev` (0: the key does not exist).
pub fn cmp_create(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

/// `key`'s mod_revision equals `rev`.
pub fn cmp_mod(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::ModRevision(rev)),
        range_end: Vec::new(),
    }
}

/// A put operation.
pub fn op_put(key: &[u8], value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value,
            ..Default::default()
        })),
    }
}

/// A delete of one key.
pub fn op_delete(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// A read of one key (used in a failed transaction's branch to learn the current value).
pub fn op_get(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}
