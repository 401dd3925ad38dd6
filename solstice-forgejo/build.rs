//! Generates the `runner.v1` and `ping.v1` message types from `proto/` without a system
//! `protoc`: protox compiles the schema in pure Rust, prost-build writes the structs and
//! pbjson-build their canonical proto3 JSON (serde) implementations.

use protox::prost::Message;

const PROTOS: [&str; 4] = [
    "ping/v1/messages.proto",
    "ping/v1/services.proto",
    "runner/v1/messages.proto",
    "runner/v1/services.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;
    let descriptors = fds.encode_to_vec();
    std::fs::write(out.join("descriptors.bin"), &descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".ping", ".runner"])?;
    Ok(())
}
