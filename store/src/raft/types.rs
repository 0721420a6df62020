//! The openraft type configuration of the store: what a log entry carries (a client
//! request in etcd's own protobuf form), what applying it returns, and how members and
//! snapshots are represented.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skiff_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};

use crate::error::StoreError;

/// A member id (etcd's 64-bit member ID).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft configuration of the store.
    pub TypeConfig:
        D = Request,
        R = ApplyResult,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of a member.
pub type Raft = openraft::Raft<TypeConfig>;
/// A raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// openraft storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// A membership as stored with the log id that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
/// A snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// What raft knows of a member: where its peers reach it. Names and client URLs are
/// published through the state machine (see `Request::MemberAttrs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// Peer URLs, e.g. `http://127.0.0.1:2380`.
    pub peer_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_urls.join(","))
    }
}

/// A snapshot of the state machine on disk (see `raft::snapshot` for the format).
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    /// Where the file is.
    pub path: PathBuf,
}

/// A protobuf message carried through serde as its protobuf encoding, so log entries
/// hold requests in etcd's own wire form.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Pb<T>(pub T);

impl<T: prost::Message> Serialize for Pb<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de, T: prost::Message + Default> Deserialize<'de> for Pb<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: prost::Message + Default> serde::de::Visitor<'_> for V<T> {
            type Value = Pb<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("protobuf bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                T::decode(v).map(Pb).map_err(E::custom)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(V(PhantomData))
    }
}

/// A replicated request: the payload of a normal log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// KV Put.
    Put(Pb<PutRequest>),
    /// KV DeleteRange.
    DeleteRange(Pb<DeleteRangeRequest>),
    /// KV Txn.
    Txn(Pb<TxnRequest>),
    /// KV Compact: history at or below `revision` becomes unreadable.
    Compact {
        /// The revision to compact to.
        revision: i64,
    },
    /// Grant a lease (the leader picked the id if the client did not).
    LeaseGrant {
        /// Lease id (> 0).
        id: i64,
        /// TTL in seconds, already raised to the minimum.
        ttl: i64,
    },
    /// Revoke a lease (client request or expiry), deleting its keys.
    LeaseRevoke {
        /// Lease id.
        id: i64,
    },
    /// Raise or clear an alarm.
    Alarm {
        /// True to raise, false to clear.
        activate: bool,
        /// The member (0 = every member, for clearing).
        member_id: u64,
        /// `AlarmType` value.
        alarm: i32,
    },
    /// A member publishes its name and client URLs (etcd's attribute publish).
    MemberAttrs {
        /// The member.
        id: NodeId,
        /// Its `--name`.
        name: String,
        /// Its advertised client URLs.
        client_urls: Vec<String>,
    },
    /// Several client requests proposed as one log entry (group commit at the
    /// proposer); applied in order, each with its own revision.
    Batch(Vec<Request>),
    /// Record that a learner was added as a voting member (etcd MemberAdd without
    /// isLearner) and is to be promoted once it has caught up.
    PromoteWhenReady {
        /// The member.
        id: NodeId,
        /// False to drop the intent (member removed or promoted).
        pending: bool,
    },
    /// A request (or `Batch`) tagged by the leader that proposed it, so that the
    /// leader's state machine hands the result straight to the waiting proposal (see
    /// `raft::proposals`). Applied exactly as the request inside.
    Tagged {
        /// The proposal's id in the proposing process.
        id: u64,
        /// What was proposed.
        request: Box<Request>,
    },
}

/// The result of applying a request, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Store revision after the request (the response header revision).
    pub revision: i64,
    /// The response, or the error the request failed with (nothing was changed then).
    pub result: Result<Response, StoreError>,
}

/// A request's response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// KV Put.
    Put(Pb<PutResponse>),
    /// KV DeleteRange.
    DeleteRange(Pb<DeleteRangeResponse>),
    /// KV Txn.
    Txn(Pb<TxnResponse>),
    /// Lease granted.
    LeaseGranted {
        /// Its id.
        id: i64,
        /// Its TTL.
        ttl: i64,
    },
    /// Alarms after an alarm change: (member, alarm type).
    Alarms(Vec<(u64, i32)>),
    /// Results of a `Request::Batch`, in order.
    Batch(Vec<ApplyResult>),
    /// Anything else that only succeeds.
    Done,
}

impl Default for ApplyResult {
    fn default() -> Self {
        Self {
            revision: 0,
            result: Ok(Response::Done),
        }
    }
}

/// Serialises with the store's one bincode configuration.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| StoreError::Internal(format!("encode: {e}")))
}

/// Deserialises what [`encode`] wrote.
///
/// # Errors
/// [`StoreError::Corruption`] on bytes that are not a `T`.
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corruption(format!("decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_bincode() {
        let r = Request::Put(Pb(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
        let b = encode(&r).unwrap();
        assert_eq!(decode::<Request>(&b).unwrap(), r);
        assert!(decode::<Request>(&[0xFF, 0xFF]).is_err());
    }
}
