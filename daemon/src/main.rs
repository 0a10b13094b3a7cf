//! brokerd: the per-user daemon that owns Entra refresh tokens and answers token requests.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use brokerd::broker::{Broker, BrokerOptions};
use brokerd::clock::SystemClock;
use brokerd::identity::IdentityClient;
use brokerd::store::{KeyringStore, MemoryStore, SecretStore, SessionIndex};
use brokerd::{listener, paths, server};

#[derive(Parser, Debug)]
#[command(
    name = "brokerd",
    version,
    about = "token-broker's daemon: keeps Entra ID refresh tokens in the OS keyring and serves \
             access tokens to kubectl over a Unix socket",
    after_help = "Logs go to stderr, filtered by RUST_LOG (default: info). Once the socket \
                  serves, brokerd prints one line to stdout: `ready <socket path>`."
)]
struct Args {
    /// Unix socket to serve [default: $TOKEN_BROKER_SOCKET, else
    /// $XDG_RUNTIME_DIR/token-broker/broker.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Where refresh tokens live. `memory` forgets everything when brokerd exits: for tests
    /// and demos only.
    #[arg(long, value_enum, default_value_t = StoreKind::Keyring)]
    store: StoreKind,

    /// Directory for the session index [default: $XDG_STATE_HOME/token-broker]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// The OS keyring: Secret Service on Linux, the Keychain on macOS.
    Keyring,
    /// Process memory.
    Memory,
}

fn main() {
    let args = Args::parse();
    init_logging();
    if let Err(error) = run(args) {
        eprintln!("brokerd: {error:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

#[tokio::main]
async fn run(args: Args) -> Result<()> {
    forbid_core_dumps();
    let socket = broker_proto::socket_path(args.socket.as_deref());

    let (store, index): (Arc<dyn SecretStore>, Option<SessionIndex>) = match args.store {
        StoreKind::Keyring => {
            let state_dir = match args.state_dir {
                Some(dir) => dir,
                None => paths::state_dir().context(
                    "cannot find a home directory for the session index; give --state-dir",
                )?,
            };
            (
                Arc::new(KeyringStore::new()),
                Some(SessionIndex::new(&state_dir)),
            )
        }
        StoreKind::Memory => {
            tracing::warn!(
                "--store memory: refresh tokens live in this process only and are FORGOTTEN \
                 when brokerd exits; every restart needs a new login"
            );
            (Arc::new(MemoryStore::new()), None)
        }
    };
    let clock = Arc::new(SystemClock);
    let identity = IdentityClient::new(clock.clone())?;
    let broker = Arc::new(Broker::new(
        store,
        index,
        identity,
        clock,
        BrokerOptions::default(),
    ));

    let listener = listener::bind(&socket, broker_proto::current_uid())?;
    tracing::info!(
        "serving on {} (secret store: {})",
        socket.display(),
        broker.store_backend()
    );
    // The readiness signal for whoever started us: the socket accepts connections from now on.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ready {}", socket.display());
    let _ = stdout.flush();
    drop(stdout);

    server::serve(listener, broker, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// brokerd's memory holds refresh tokens: keep it out of core files, and (on Linux) out of
/// reach of ptrace by other processes of the same user.
fn forbid_core_dumps() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!("could not disable core dumps: {e}");
    }
}
