//! Compiles `broker.proto` with protox (pure Rust), so building needs no system `protoc`.
//! Client and server stubs are generated only for the features that ask for them, which keeps
//! server code out of broker-shim.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=broker.proto");
    let descriptors = protox::compile(["broker.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // `connect()` below replaces the generated transport helpers.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
