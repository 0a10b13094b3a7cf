//! fake-apiserver: an HTTPS stand-in for a Kubernetes API server that trusts the tokens a
//! running mock-entra signs (it reads the keys mock-entra publishes), for trying token-broker
//! with real kubectl and no cluster. Prints its URL on the first line of stdout, and writes a
//! kubeconfig whose user runs broker-shim against the mock.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use broker_tests::apiserver::{FakeApiServer, Verifier};
use broker_tests::jwt::PublishedKeys;
use broker_tests::mock_entra::{AKS_SERVER_ID, TENANT_ID};

#[derive(Parser, Debug)]
#[command(
    name = "fake-apiserver",
    version,
    about = "An HTTPS Kubernetes API stand-in on 127.0.0.1 that trusts mock-entra's tokens"
)]
struct Args {
    /// mock-entra's URL, as it printed it
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8400")]
    mock: String,
    /// Port on 127.0.0.1 (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The tenant whose keys to trust and whose users to sign in
    #[arg(long, value_name = "ID", default_value = TENANT_ID)]
    tenant_id: String,
    /// Write a kubeconfig for this server here, its user running broker-shim
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The command the kubeconfig's user runs
    #[arg(long, value_name = "PATH", default_value = "broker-shim")]
    shim: String,
}

fn main() {
    let args = Args::parse();
    if let Err(message) = run(&args) {
        eprintln!("fake-apiserver: {message}");
        std::process::exit(1);
    }
    // Serve until killed; the server runs on its own threads.
    loop {
        std::thread::park();
    }
}

fn run(args: &Args) -> Result<(), String> {
    let keys = fetch_keys(&args.mock, &args.tenant_id)?;
    let verifier: Arc<Verifier> = Arc::new(move |token, audience| keys.verify(token, audience));
    let server = FakeApiServer::start_on(verifier, args.port)
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    println!("{}", server.url());
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, kubeconfig(args, &server))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!(
            "fake-apiserver: wrote {path}; try: kubectl --kubeconfig {path} get --raw /api",
            path = path.display()
        );
    }
    eprintln!(
        "fake-apiserver: serving /api and /version on {}, for tokens mock-entra signs for {}",
        server.url(),
        AKS_SERVER_ID
    );
    // Kept for the life of the process.
    std::mem::forget(server);
    Ok(())
}

/// The mock's published keys: `GET {mock}/{tenant}/discovery/v2.0/keys`, over plain HTTP on
/// loopback.
fn fetch_keys(mock: &str, tenant: &str) -> Result<PublishedKeys, String> {
    let address = mock
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|host| host.starts_with("127.0.0.1:") || host.starts_with("localhost:"))
        .ok_or_else(|| format!("--mock {mock:?} is not http://127.0.0.1:PORT"))?;
    let mut stream = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot reach mock-entra at {mock}: {e} (is it running?)"))?;
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    write!(
        stream,
        "GET /{tenant}/discovery/v2.0/keys HTTP/1.0\r\nHost: {address}\r\n\r\n"
    )
    .map_err(|e| format!("cannot ask mock-entra for its keys: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("cannot read mock-entra's keys: {e}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or("mock-entra's answer has no body")?;
    let jwks: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("mock-entra's keys are not JSON: {e}"))?;
    PublishedKeys::from_jwks(&jwks)
}

fn kubeconfig(args: &Args, server: &FakeApiServer) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(server.ca_pem());
    let authority = format!("{}/", args.mock.trim_end_matches('/'));
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: {url}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: demo\n  user:\n    exec:\n      \
         apiVersion: client.authentication.k8s.io/v1\n      command: {shim}\n      args: \
         [get-token, --server-id, {server_id}, --tenant-id, {tenant}, --authority-host, \
         '{authority}']\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n\
         contexts:\n- name: demo\n  context: {{cluster: demo, user: demo}}\ncurrent-context: demo\n",
        url = server.url(),
        shim = args.shim,
        server_id = AKS_SERVER_ID,
        tenant = args.tenant_id,
    )
}
