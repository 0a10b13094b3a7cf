//! mock-entra: the project's mock of Microsoft Entra ID, on loopback, for trying token-broker
//! without Azure. Prints its base URL on the first line of stdout; pass it to brokerctl and
//! broker-shim as `--authority-host`.

use clap::Parser;

use broker_tests::mock_entra::{AKS_CLIENT_ID, AKS_SERVER_ID, MockConfig, MockEntra, TENANT_ID};

#[derive(Parser, Debug)]
#[command(
    name = "mock-entra",
    version,
    about = "A mock Microsoft Entra ID (v2.0 endpoints) on 127.0.0.1"
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Approve device codes the moment they are issued
    #[arg(long)]
    auto_approve: bool,
    /// Lifetime of the access tokens it issues, in seconds
    #[arg(long, default_value_t = 3599, value_name = "SECONDS")]
    access_token_lifetime: u64,
    /// The device code polling interval it asks for, in seconds
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    device_code_interval: u64,
}

fn main() {
    let args = Args::parse();
    let config = MockConfig {
        access_token_lifetime: args.access_token_lifetime,
        device_code_interval: args.device_code_interval,
        auto_approve: args.auto_approve,
        ..MockConfig::default()
    };
    let mock = match MockEntra::start_on(config, args.port) {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-entra: cannot listen on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    println!("{}", mock.base_url());
    eprintln!(
        "mock-entra: serving Entra ID v2.0 endpoints on {base}\n\
         \x20 tenant {TENANT_ID}, client {AKS_CLIENT_ID}, server {AKS_SERVER_ID}\n\
         \x20 sign in at {base}/devicelogin (or POST {base}/_mock/approve to approve every pending code)",
        base = mock.base_url()
    );
    // Serve until killed; the mock runs on its own threads.
    loop {
        std::thread::park();
    }
}
