//! Compiles proto/deviceplugin.proto (the kubelet's device plugin API) into Rust with
//! protox, a protobuf compiler written in Rust: no protoc is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/deviceplugin.proto");
    let fds = protox::compile(["proto/deviceplugin.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
