//! Generates the Rust types and tonic services from the .proto files in this crate, and
//! the descriptor set of the Kubernetes messages in `k8s/` (decoded dynamically by the
//! API server: no Rust types are generated for them).
//! Needs `protoc` (Debian: protobuf-compiler), installed by `scripts/install-deps.sh`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::Codec")
        .compile_protos(&["etcd/rpc.proto", "etcd/kv.proto"], &["etcd"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::Codec")
        .compile_protos(&["skiff/raft.proto", "skiff/api.proto"], &["skiff"])?;

    // The Kubernetes messages: only their FileDescriptorSet is used. prost still writes
    // Rust sources for them, into a directory of their own that nothing includes.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let unused = out.join("k8s-unused");
    std::fs::create_dir_all(&unused)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .out_dir(&unused)
        .file_descriptor_set_path(out.join("k8s_descriptors.bin"))
        .compile_protos(
            &[
                "k8s/runtime.proto",
                "k8s/meta.proto",
                "k8s/intstr.proto",
                "k8s/resource.proto",
                "k8s/core.proto",
                "k8s/apps.proto",
            ],
            &["k8s"],
        )?;
    Ok(())
}
