//! Generates Rust code from `presence/v1/*.proto` with a pure-Rust compiler (no `protoc` needed),
//! and writes the descriptor set that gRPC reflection serves.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "presence/v1/client.proto",
    "presence/v1/registry.proto",
    "presence/v1/gateway_link.proto",
    "presence/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("presence_descriptor.bin"), fds.encode_to_vec())?;
    // Every service decodes with `codec::SliceCodec` (prost's, reading from a slice: see there).
    // A batch query's ids decode into one buffer, not a `String` each (see `query_request.rs`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::SliceCodec")
        .extern_path(".presence.v1.QueryRequest", "crate::query_request::QueryRequest")
        .compile_fds(fds)?;
    Ok(())
}
