//! Generates the Rust types and tonic services from the .proto files in this crate.
//! Needs `protoc` (Debian: protobuf-compiler), installed by `scripts/install-deps.sh`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["etcd/rpc.proto", "etcd/kv.proto"], &["etcd"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["skiff/raft.proto", "skiff/api.proto"], &["skiff"])?;
    Ok(())
}
