//! brokerd: the per-user daemon that owns Entra refresh tokens and answers token requests.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use brokerd::broker::{Broker, scheduler};
use brokerd::cli::{DaemonArgs as Args, StoreChoice};
use brokerd::clock::{AdjustableClock, Clock, SystemClock};
use brokerd::config::{self, watch::Settings};
use brokerd::identity::IdentityClient;
use brokerd::rpc::TestClockService;
use brokerd::store::{KeyringStore, MemoryStore, SecretStore, SessionIndex};
use brokerd::{listener, paths, server};

fn main() {
    let args = Args::parse();
    if let Err(error) = run(args) {
        eprintln!("brokerd: {error:#}");
        std::process::exit(1);
    }
}

/// Logging to stderr; the filter is RUST_LOG when set, else the configuration's `log_level`,
/// which a reload may change. Returns the handle that changes it.
fn init_logging(
    config_level: Option<&str>,
) -> Option<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>> {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = from_env
        .as_deref()
        .or(config_level)
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .init();
    // RUST_LOG pins the filter; only the configuration's level follows reloads.
    from_env.is_none().then_some(handle)
}

#[tokio::main]
async fn run(args: Args) -> Result<()> {
    forbid_core_dumps();
    let config_path = match args.config {
        Some(path) => path,
        None => config::default_path()
            .context("cannot find a configuration directory; give --config")?,
    };
    let settings = Arc::new(Settings::load(config_path)?);
    let log_handle = init_logging(settings.get().log_level.as_deref());
    let socket = broker_proto::socket_path(args.socket.as_deref());

    let (store, index): (Arc<dyn SecretStore>, Option<SessionIndex>) = match args.store {
        StoreChoice::Keyring => {
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
        StoreChoice::Memory => {
            tracing::warn!(
                "--store memory: refresh tokens live in this process only and are FORGOTTEN \
                 when brokerd exits; every restart needs a new login"
            );
            (Arc::new(MemoryStore::new()), None)
        }
    };

    let test_clock = args.test_clock.then(|| {
        tracing::warn!("--test-clock: the clock can be moved through the socket (tests only)");
        Arc::new(AdjustableClock::default())
    });
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(clock) => clock.clone(),
        None => Arc::new(SystemClock),
    };
    let identity = IdentityClient::new(clock.clone())?;
    let broker = Broker::new(store, index, identity, clock, settings.clone());

    let listener = listener::bind(&socket, broker_proto::current_uid())?;
    tracing::info!(
        "serving on {} (secret store: {}; configuration: {})",
        socket.display(),
        broker.store_backend(),
        settings.path().display()
    );
    config::watch::spawn_reloader(settings.clone());
    if let Some(handle) = log_handle {
        follow_log_level(&settings, handle);
    }
    tokio::spawn(scheduler::run(broker.clone()));

    // The readiness signal for whoever started us: the socket accepts connections from now on.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ready {}", socket.display());
    let _ = stdout.flush();
    drop(stdout);

    let test_clock = test_clock.map(|clock| TestClockService {
        clock,
        broker: broker.clone(),
    });
    server::serve(listener, broker, test_clock, shutdown_signal()).await?;
    Ok(())
}

/// Applies the configuration's `log_level` whenever a reload changes it.
fn follow_log_level(
    settings: &Settings,
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
) {
    let mut changes = settings.subscribe();
    tokio::spawn(async move {
        let mut level = changes.borrow().log_level.clone();
        while changes.changed().await.is_ok() {
            let new = changes.borrow().log_level.clone();
            if new == level {
                continue;
            }
            let filter = EnvFilter::try_new(new.as_deref().unwrap_or("info"))
                .unwrap_or_else(|_| EnvFilter::new("info"));
            match handle.reload(filter) {
                Ok(()) => tracing::info!("log level is now {}", new.as_deref().unwrap_or("info")),
                Err(e) => tracing::warn!("cannot change the log level: {e}"),
            }
            level = new;
        }
    });
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
        eprintln!("brokerd: could not disable core dumps: {e}");
    }
}
