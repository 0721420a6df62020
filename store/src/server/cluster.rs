//! The etcd `Cluster` service: membership.

use std::sync::Arc;

use skiff_proto::etcdserverpb::cluster_server::Cluster;
use skiff_proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::error::StoreError;
use crate::member::{Forward, ForwardReply, Member, MemberInfo};
use crate::server::check_leader;

/// Cluster service over a member.
pub struct ClusterService {
    /// The member.
    pub member: Arc<Member>,
}

fn pb(m: &MemberInfo) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    async fn change(&self, op: Forward) -> Result<(Option<PbMember>, Vec<PbMember>), Status> {
        match self.member.membership(op).await? {
            ForwardReply::Members { added, members, .. } => {
                Ok((added.as_ref().map(pb), members.iter().map(pb).collect()))
            }
            other => Err(StoreError::Internal(format!("unexpected reply {other:?}")).into()),
        }
    }

    fn header(&self) -> Option<skiff_proto::etcdserverpb::ResponseHeader> {
        Some(self.member.header(self.member.sm.kv.current_revision()))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        let (added, members) = self
            .change(Forward::MemberAdd {
                peer_urls: req.peer_ur_ls,
                learner: req.is_learner,
            })
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: added,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        check_leader(&self.member, &request)?;
        let (_, members) = self
            .change(Forward::MemberRemove(request.get_ref().id))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        check_leader(&self.member, &request)?;
        let req = request.into_inner();
        let (_, members) = self
            .change(Forward::MemberUpdate(req.id, req.peer_ur_ls))
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        check_leader(&self.member, &request)?;
        if request.get_ref().linearizable {
            self.member.linearizable_barrier().await?;
        }
        let members = self.member.members().iter().map(pb).collect();
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        check_leader(&self.member, &request)?;
        let (_, members) = self
            .change(Forward::MemberPromote(request.get_ref().id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
