//! The store's error type, and the one table that turns it into a gRPC status.
//!
//! Variants are the things a caller decides on. Errors cross member boundaries (a
//! follower forwards a write to the leader and relays its answer), so the type is
//! serialisable and carries causes as text.

use serde::{Deserialize, Serialize};

/// Everything a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// The requested revision was compacted away.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision the store is compacted to.
        compact_revision: i64,
    },
    /// The requested revision is beyond the current one.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The backend quota is exhausted (NOSPACE alarm): only reads and deletes pass.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The lease does not exist (never granted, revoked or expired).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease with the requested id already exists.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The requested TTL is above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    KeyNotProvided,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More operations in a Txn than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes to the same key within one Txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A request over the size limit.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A malformed or contradictory request.
    #[error("{0}")]
    InvalidArgument(String),
    /// No leader is known (election in progress or quorum lost).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; its outcome is unknown.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not complete in time; its outcome is unknown.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down or was removed.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// No member with that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member with these peer URLs exists.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// Peer URLs that do not parse.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// Promote of a member that is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// Promote of a learner that has not caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A second learner (etcd allows one).
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// The change would leave too few started members for a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// Something the operation depends on is temporarily unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// A disk or engine error.
    #[error("storage: {0}")]
    Storage(String),
    /// Data on disk that cannot be what the store wrote.
    #[error("corruption: {0}")]
    Corruption(String),
    /// A broken internal expectation; reported rather than panicking on a client's request.
    #[error("internal: {0}")]
    Internal(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<StoreError> for tonic::Status {
    /// etcd's mapping of errors to gRPC codes; clients match on code and message.
    fn from(e: StoreError) -> Self {
        use tonic::Code;
        let code = match &e {
            StoreError::Compacted { .. } | StoreError::FutureRevision => Code::OutOfRange,
            StoreError::LeaseTtlTooLarge => Code::OutOfRange,
            StoreError::NoSpace => Code::ResourceExhausted,
            StoreError::LeaseNotFound | StoreError::MemberNotFound => Code::NotFound,
            StoreError::LeaseExists
            | StoreError::PeerUrlExists
            | StoreError::MemberNotLearner
            | StoreError::LearnerNotReady
            | StoreError::TooManyLearners
            | StoreError::NotEnoughStarted
            | StoreError::BadLeaderTransferee => Code::FailedPrecondition,
            StoreError::KeyNotProvided
            | StoreError::KeyNotFound
            | StoreError::ValueProvided
            | StoreError::LeaseProvided
            | StoreError::TooManyOps
            | StoreError::DuplicateKey
            | StoreError::RequestTooLarge
            | StoreError::MemberBadUrls
            | StoreError::InvalidArgument(_) => Code::InvalidArgument,
            StoreError::NoLeader
            | StoreError::LeaderChanged
            | StoreError::Timeout
            | StoreError::Stopped
            | StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Storage(_) | StoreError::Internal(_) => Code::Internal,
            StoreError::Corruption(_) => Code::DataLoss,
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_etcd() {
        let s: tonic::Status = StoreError::Compacted {
            compact_revision: 3,
        }
        .into();
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: tonic::Status = StoreError::LeaseNotFound.into();
        assert_eq!(
            (s.code(), s.message()),
            (
                tonic::Code::NotFound,
                "etcdserver: requested lease not found"
            )
        );
        let s: tonic::Status = StoreError::NoLeader.into();
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
    }
}
