//! The etcd `KV` service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use prost::Message;
use skiff_proto::etcdserverpb::kv_server::Kv;
use skiff_proto::etcdserverpb::request_op::Request as OpRequest;
use skiff_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::member::Member;
use crate::mvcc::{validate, WriteTxn};
use crate::raft::types::{Pb, Request as Cmd, Response as CmdResponse};
use crate::server::{check_leader, check_size, check_space};

/// KV service over a member.
pub struct KvService {
    /// The member.
    pub member: Arc<Member>,
}

/// Whether a Txn (including nested ones) only reads.
fn read_only(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(OpRequest::RequestRange(_)) | None => true,
        Some(OpRequest::RequestTxn(t)) => read_only(&t.success) && read_only(&t.failure),
        _ => false,
    })
}

/// Whether every Range in a Txn is serializable.
fn all_serializable(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(OpRequest::RequestRange(r)) => r.serializable,
        Some(OpRequest::RequestTxn(t)) => {
            all_serializable(&t.success) && all_serializable(&t.failure)
        }
        _ => true,
    })
}

/// Runs a read of the store: here when it reads single keys only (`point`), on the
/// blocking pool otherwise. A point read is a few microseconds (memtable, block cache),
/// while handing it to the blocking pool — a thread woken and parked again per request —
/// cost more than the read itself (a third of a member's CPU at 64 clients of
/// serializable gets, by `perf`). Reads over a range of keys still go to the blocking
/// pool, so a large one never holds a runtime worker.
async fn read<T: Send + 'static>(
    point: bool,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if point {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
}

/// Whether every Range in `ops` reads one key (see [`read`]).
fn point_reads(ops: &[RequestOp]) -> bool {
    ops.iter().all(|op| match &op.request {
        Some(OpRequest::RequestRange(r)) => r.range_end.is_empty(),
        Some(OpRequest::RequestTxn(t)) => point_reads(&t.success) && point_reads(&t.failure),
        _ => true,
    })
}

/// Whether a Txn may write a value (so it is refused while NOSPACE is raised).
fn has_put(ops: &[RequestOp]) -> bool {
    ops.iter().any(|op| match &op.request {
        Some(OpRequest::RequestPut(_)) => true,
        Some(OpRequest::RequestTxn(t)) => has_put(&t.success) || has_put(&t.failure),
        _ => false,
    })
}

impl KvService {
    async fn range_inner(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        validate::range(&req)?;
        if !req.serializable {
            self.member.linearizable_barrier().await?;
        }
        let kv = self.member.sm.kv.clone();
        let (mut resp, at) = read(req.range_end.is_empty(), move || kv.range(&req)).await?;
        // The revision the read saw, not the current one: a write applied while the
        // range ran must not make the header claim data the response lacks (the API
        // server's watch cache lists, then watches from header.revision + 1).
        resp.header = Some(self.member.header(at));
        Ok(resp)
    }

    async fn txn_inner(&self, req: TxnRequest) -> Result<TxnResponse, StoreError> {
        validate::txn(&req, self.member.config.max_txn_ops)?;
        if read_only(&req.success) && read_only(&req.failure) {
            if !(all_serializable(&req.success) && all_serializable(&req.failure)) {
                self.member.linearizable_barrier().await?;
            }
            let kv = self.member.sm.kv.clone();
            let lessor = self.member.sm.lessor.clone();
            let point = point_reads(&req.success) && point_reads(&req.failure);
            let (rev, mut resp) = read(point, move || {
                let mut scratch = rocksdb::WriteBatch::default();
                let exists = move |id: i64| lessor.exists(id);
                let mut tx = WriteTxn::new(&kv, &mut scratch, &exists);
                let resp = tx.txn(&req)?;
                Ok((tx.result_revision(), resp))
            })
            .await?;
            resp.header = Some(self.member.header(rev));
            return Ok(resp);
        }
        if has_put(&req.success) || has_put(&req.failure) {
            check_space(&self.member)?;
        }
        let r = self.member.propose(Cmd::Txn(Pb(req))).await?;
        match r.result? {
            CmdResponse::Txn(Pb(mut resp)) => {
                fill_txn_headers(&mut resp, &self.member, r.revision);
                Ok(resp)
            }
            other => Err(StoreError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }
}

/// etcd fills the header of every nested response too.
fn fill_txn_headers(resp: &mut TxnResponse, member: &Member, rev: i64) {
    use skiff_proto::etcdserverpb::response_op::Response as R;
    resp.header = Some(member.header(rev));
    for op in &mut resp.responses {
        match &mut op.response {
            Some(R::ResponseRange(r)) => r.header = Some(member.header(rev)),
            Some(R::ResponsePut(r)) => r.header = Some(member.header(rev)),
            Some(R::ResponseDeleteRange(r)) => r.header = Some(member.header(rev)),
            Some(R::ResponseTxn(t)) => fill_txn_headers(t, member, rev),
            None => {}
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        check_leader(&self.member, &request)?;
        check_size(&self.member, request.get_ref().encoded_len())?;
        Ok(Response::new(self.range_inner(request.into_inner()).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        check_leader(&self.member, &request)?;
        check_size(&self.member, request.get_ref().encoded_len())?;
        let req = request.into_inner();
        validate::put(&req)?;
        check_space(&self.member)?;
        let r = self.member.propose(Cmd::Put(Pb(req))).await?;
        match r.result.map_err(Status::from)? {
            CmdResponse::Put(Pb(mut resp)) => {
                resp.header = Some(self.member.header(r.revision));
                Ok(Response::new(resp))
            }
            other => Err(StoreError::Internal(format!("unexpected apply result {other:?}")).into()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        check_leader(&self.member, &request)?;
        check_size(&self.member, request.get_ref().encoded_len())?;
        let req = request.into_inner();
        validate::delete_range(&req)?;
        let r = self.member.propose(Cmd::DeleteRange(Pb(req))).await?;
        match r.result.map_err(Status::from)? {
            CmdResponse::DeleteRange(Pb(mut resp)) => {
                resp.header = Some(self.member.header(r.revision));
                Ok(Response::new(resp))
            }
            other => Err(StoreError::Internal(format!("unexpected apply result {other:?}")).into()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        check_leader(&self.member, &request)?;
        check_size(&self.member, request.get_ref().encoded_len())?;
        Ok(Response::new(self.txn_inner(request.into_inner()).await?))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        let r = self
            .member
            .propose(Cmd::Compact {
                revision: req.revision,
            })
            .await?;
        Ok(Response::new(CompactionResponse {
            header: Some(self.member.header(r.revision)),
        }))
    }
}
