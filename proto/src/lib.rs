//! Protocol buffers of Skiff, compiled by tonic/prost.
//!
//! # Layout
//! - [`etcdserverpb`] and [`mvccpb`]: the etcd v3 client API, wire-compatible with etcd
//!   (package, service and method names and field numbers are etcd's). Skiff's store
//!   serves it; Skiff's API server, benchmark and jepsen harness speak it, so each of them
//!   runs unchanged against a real etcd.
//! - [`api`]: `skiff.v1`, the control plane's API for programs: the Kubernetes objects
//!   (as JSON in typed envelopes) with get/list/create/update/patch/delete and a
//!   server-streaming watch.
//! - [`raft`]: `skiff.raft.v1`, the peer API between store members (raft messages,
//!   streamed snapshots, requests forwarded to the leader).
//!
//! - [`prefix_end`]: the `range_end` of a key prefix.
//!
//! The .proto sources are beside this crate in `etcd/` and `skiff/`.

#![allow(clippy::all, clippy::pedantic)]

/// `mvccpb`: `KeyValue` and `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster and Maintenance services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `skiff.v1`: the control plane's native API (objects and streaming watch).
pub mod api {
    tonic::include_proto!("skiff.v1");
}

/// `skiff.raft.v1`: the store's member-to-member API.
pub mod raft {
    tonic::include_proto!("skiff.raft.v1");
}

/// The smallest key greater than every key starting with `prefix`: the `range_end` that
/// makes a request cover the prefix (etcdctl's `--prefix`). `[0]` — every key — when
/// `prefix` is empty or all `0xff`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
