//! Skiff's API server: the Kubernetes REST API (as kubectl and client-go use it) and the
//! `skiff.v1` gRPC API, both over an etcd v3 store reached only through its gRPC API.
//!
//! Stateless: every replica serves every request; the store holds all state. Objects are
//! the `k8s-openapi` types, stored as JSON under `/registry/<resource>/<namespace>/<name>`,
//! with the store's mod_revision as their resourceVersion.
//!
//! # Map
//! - [`resources`]: the table of served resources.
//! - [`error`]: `Status` errors.
//! - [`patch`]: JSON merge, JSON patch and strategic merge patch.
//! - [`protobuf`]: Kubernetes protobuf request bodies (kubectl's generators), as JSON.
//! - [`validation`]: defaulting and validation per resource.
//! - [`selector`]: label and field selectors.
//! - [`table`]: `meta.k8s.io/v1 Table` rows for `kubectl get`.
//! - [`logs`], [`exec`]: `pods/log` and `pods/exec`, relayed to the node agent.

pub mod cache;
pub mod discovery;
pub mod error;
pub mod exec;
pub mod fence;
pub mod grpc;
pub mod logs;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod resources;
pub mod rest;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod types;
pub mod validation;
