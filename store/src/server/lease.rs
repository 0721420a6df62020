//! The etcd `Lease` service.

use std::sync::Arc;

use skiff_proto::etcdserverpb::lease_server::Lease;
use skiff_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::lease::MAX_LEASE_TTL;
use crate::member::Member;
use crate::raft::types::{Request as Cmd, Response as CmdResponse};
use crate::server::{check_leader, check_space};

/// Lease service over a member.
pub struct LeaseService {
    /// The member.
    pub member: Arc<Member>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge.into());
        }
        if req.id < 0 {
            return Err(StoreError::InvalidArgument(
                "etcdserver: lease ID must be positive".into(),
            )
            .into());
        }
        check_space(&self.member)?;
        let ttl = req.ttl.max(self.member.config.min_lease_ttl());
        // A client-chosen id is used as is; otherwise pick one, retrying on the (rare)
        // collision with an existing lease.
        let mut attempts = 0;
        loop {
            let id = if req.id != 0 {
                req.id
            } else {
                (rand::random::<u64>() >> 1).max(1) as i64
            };
            match self.member.propose(Cmd::LeaseGrant { id, ttl }).await {
                Ok(r) => {
                    let (id, ttl) = match r.result? {
                        CmdResponse::LeaseGranted { id, ttl } => (id, ttl),
                        other => {
                            return Err(StoreError::Internal(format!(
                                "unexpected apply result {other:?}"
                            ))
                            .into())
                        }
                    };
                    return Ok(Response::new(LeaseGrantResponse {
                        header: Some(self.member.header(r.revision)),
                        id,
                        ttl,
                        error: String::new(),
                    }));
                }
                Err(StoreError::LeaseExists) if req.id == 0 && attempts < 3 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        check_leader(&self.member, &request)?;
        let r = self
            .member
            .propose(Cmd::LeaseRevoke {
                id: request.get_ref().id,
            })
            .await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.member.header(r.revision)),
        }))
    }

    type LeaseKeepAliveStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>,
    >;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        check_leader(&self.member, &request)?;
        let mut inbound = request.into_inner();
        let member = self.member.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let header = Some(member.header(member.sm.kv.current_revision()));
                let resp = match member.lease_keep_alive(req.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header,
                        id: req.id,
                        ttl,
                    }),
                    // etcd answers a keep-alive of a missing lease with TTL 0.
                    Err(StoreError::LeaseNotFound) => Ok(LeaseKeepAliveResponse {
                        header,
                        id: req.id,
                        ttl: 0,
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                let stop = resp.is_err();
                if tx.send(resp).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        let header = Some(self.member.header(self.member.sm.kv.current_revision()));
        match self.member.lease_time_to_live(req.id).await {
            Ok((remaining, granted)) => {
                let keys = if req.keys {
                    self.member.lease_keys(req.id)?
                } else {
                    Vec::new()
                };
                Ok(Response::new(LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl: remaining,
                    granted_ttl: granted,
                    keys,
                }))
            }
            // etcd reports a missing lease as TTL -1, not as an error.
            Err(StoreError::LeaseNotFound) => Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            })),
            Err(e) => Err(e.into()),
        }
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        check_leader(&self.member, &request)?;
        let leases = self
            .member
            .sm
            .lessor
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        let header = Some(self.member.header(self.member.sm.kv.current_revision()));
        Ok(Response::new(LeaseLeasesResponse { header, leases }))
    }
}
