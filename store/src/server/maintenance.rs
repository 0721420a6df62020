//! The etcd `Maintenance` service: status, alarms, defragmentation, hashes, snapshot
//! download, leader transfer.

use std::sync::Arc;

use skiff_proto::etcdserverpb::alarm_request::AlarmAction;
use skiff_proto::etcdserverpb::maintenance_server::Maintenance;
use skiff_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::member::Member;
use crate::raft::types::{Request as Cmd, Response as CmdResponse};
use crate::server::check_leader;
use crate::storage;

/// The etcd API version Skiff's store implements.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Maintenance service over a member.
pub struct MaintenanceService {
    /// The member.
    pub member: Arc<Member>,
}

fn alarm_members(list: impl IntoIterator<Item = (u64, i32)>) -> Vec<AlarmMember> {
    list.into_iter()
        .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
        .collect()
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        let action = AlarmAction::try_from(req.action).map_err(|_| {
            StoreError::InvalidArgument(format!("etcdserver: unknown alarm action {}", req.action))
        })?;
        let alarms = match action {
            AlarmAction::Get => {
                let all = self.member.sm.meta.read().alarms.clone();
                alarm_members(all.into_iter().filter(|(m, a)| {
                    (req.member_id == 0 || *m == req.member_id)
                        && (req.alarm == 0 || *a == req.alarm)
                }))
            }
            AlarmAction::Activate | AlarmAction::Deactivate => {
                if AlarmType::try_from(req.alarm).is_err() || req.alarm == AlarmType::None as i32 {
                    return Err(StoreError::InvalidArgument(
                        "etcdserver: unknown alarm type".into(),
                    )
                    .into());
                }
                let r = self
                    .member
                    .propose(Cmd::Alarm {
                        activate: action == AlarmAction::Activate,
                        member_id: req.member_id,
                        alarm: req.alarm,
                    })
                    .await?;
                match r.result? {
                    // etcd answers with the alarm the request touched.
                    CmdResponse::Alarms(_) => alarm_members([(req.member_id, req.alarm)]),
                    other => {
                        return Err(StoreError::Internal(format!(
                            "unexpected apply result {other:?}"
                        ))
                        .into())
                    }
                }
            }
        };
        let header = Some(self.member.header(self.member.sm.kv.current_revision()));
        Ok(Response::new(AlarmResponse { header, alarms }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.member.raft.metrics().borrow().clone();
        let db = &self.member.sm.db;
        let is_learner = !self
            .member
            .sm
            .meta
            .read()
            .membership
            .voter_ids()
            .any(|v| v == self.member.id);
        let errors = self
            .member
            .sm
            .meta
            .read()
            .alarms
            .iter()
            .map(|(member, a)| {
                let name = AlarmType::try_from(*a)
                    .map_or("UNKNOWN".to_string(), |t| t.as_str_name().to_string());
                format!("memberID:{member} alarm:{name} ")
            })
            .collect();
        Ok(Response::new(StatusResponse {
            header: Some(self.member.header(self.member.sm.kv.current_revision())),
            version: ETCD_API_VERSION.into(),
            db_size: storage::db_size(db) as i64,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: storage::db_size_in_use(db) as i64,
            is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let db = self.member.sm.db.clone();
        tokio::task::spawn_blocking(move || storage::defragment(&db))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let header = Some(self.member.header(self.member.sm.kv.current_revision()));
        Ok(Response::new(DefragmentResponse { header }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let kv = self.member.sm.kv.clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || kv.hash_kv(0))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Response::new(HashResponse {
            header: Some(self.member.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let kv = self.member.sm.kv.clone();
        let at = request.get_ref().revision;
        let (hash, rev) = tokio::task::spawn_blocking(move || kv.hash_kv(at))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(Response::new(HashKvResponse {
            header: Some(self.member.header(self.member.sm.kv.current_revision())),
            hash,
            compact_revision: self.member.sm.kv.compact_revision(),
            hash_revision: rev,
        }))
    }

    type SnapshotStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<SnapshotResponse, Status>> + Send>,
    >;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let member = self.member.clone();
        let path = member
            .scratch_dir
            .join(format!("download-{}.snap", rand::random::<u64>()));
        let p = path.clone();
        let db = member.sm.db.clone();
        tokio::task::spawn_blocking(move || {
            crate::raft::snapshot::write_snapshot(&db, &p)?;
            crate::raft::snapshot::append_download_trailer(&p)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
            .len();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        sent += n as u64;
                        let resp = SnapshotResponse {
                            header: Some(member.header(member.sm.kv.current_revision())),
                            remaining_bytes: total - sent,
                            blob: buf,
                            version: ETCD_API_VERSION.into(),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading snapshot: {e}"))))
                            .await;
                        break;
                    }
                }
            }
            let _ = tokio::fs::remove_file(&path).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.member.move_leader(request.get_ref().target_id).await?;
        let header = Some(self.member.header(self.member.sm.kv.current_revision()));
        Ok(Response::new(MoveLeaderResponse { header }))
    }
}
