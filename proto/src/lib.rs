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
//! - [`K8S_DESCRIPTORS`]: the Kubernetes messages (`io.k8s.*`) whose protobuf encoding the
//!   API server decodes, as a descriptor set for dynamic decoding.
//!
//! - [`codec`]: the gRPC codec of every generated client and server (smaller buffers).
//! - [`coalesce`]: connections whose HTTP/2 frames of one scheduler round leave in one
//!   write (the store's client port, the benchmark's clients).
//!
//! - [`prefix_end`]: the `range_end` of a key prefix.
//!
//! The .proto sources are beside this crate in `etcd/`, `skiff/` and `k8s/`.

#![allow(clippy::all, clippy::pedantic)]

pub mod coalesce;
pub mod codec;

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

/// The encoded `google.protobuf.FileDescriptorSet` of `k8s/*.proto` (with imports): our
/// declarations of the Kubernetes messages that kubectl and client-go send as protobuf
/// request bodies (the `runtime.Unknown` envelope, Namespace, ConfigMap, Secret, Service,
/// apps/v1 Deployment), with Kubernetes's field numbers and names.
///
/// A descriptor set rather than generated structs because the API server converts these
/// messages to JSON generically and must see every field present on the wire, known or
/// not (`prost-reflect` keeps unknown fields; generated structs would drop them). See
/// `k8s/README.md` for the conventions the declarations follow.
pub const K8S_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s_descriptors.bin"));

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
