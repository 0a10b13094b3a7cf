//! brokerd: the per-user daemon that owns Entra refresh tokens and answers token requests.

// A windowless program on Windows: started at logon or on demand, it never opens (or flashes)
// a console window. It logs to a file there, as a start on demand does everywhere.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use brokerd::broker::{Broker, scheduler};
use brokerd::cli::{DaemonArgs as Args, StoreChoice};
use brokerd::clock::{AdjustableClock, Clock, SystemClock};
use brokerd::config::{self, watch::Settings};
use brokerd::identity::IdentityClient;
#[cfg(unix)]
use brokerd::listener;
use brokerd::rpc::TestClockService;
use brokerd::store::{KeyringStore, MemoryStore, SecretStore, SessionIndex};
use brokerd::{hardening, paths, server};

/// A listening socket handed over by the service manager (systemd, launchd); none on Windows.
#[cfg(unix)]
type Inherited = std::os::unix::net::UnixListener;
#[cfg(windows)]
type Inherited = std::convert::Infallible;

/// This start's turn: on Unix the start lock, let go once brokerd serves; on Windows the
/// named mutex that makes it the user's one brokerd, held for its whole life.
#[cfg(unix)]
type StartTurn = listener::StartLock;
#[cfg(windows)]
type StartTurn = brokerd::pipe::Instance;

/// How long start-up asks the secret store whether it answers.
const STORE_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long shutting down waits for unsaved refresh tokens to reach the store.
const SHUTDOWN_SAVE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a start on demand waits behind another one.
const START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn main() {
    // Before anything secret is in memory, and before there are other threads.
    let unprotected = hardening::protect_process();
    hardening::raise_open_file_limit();
    let args = Args::parse();
    // While the process has one thread: taking the socket unsets LISTEN_FDS and LISTEN_PID.
    #[cfg(unix)]
    let inherited = listener::take_inherited();
    #[cfg(windows)]
    let inherited: std::io::Result<Option<Inherited>> = Ok(None);
    let inherited = match inherited {
        Ok(inherited) => inherited,
        Err(error) => exit_with(&error.into()),
    };
    let socket = broker_proto::socket_path(args.socket.as_deref());
    let start = if args.on_demand && inherited.is_none() {
        match on_demand_turn(&socket) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                // Another start won the race and serves: that is what our caller waits for.
                println!("ready {}", socket.display());
                return;
            }
            Err(error) => exit_with(&error),
        }
    } else {
        None
    };
    if let Err(error) = run(args, socket, inherited, start, unprotected) {
        exit_with(&error);
    }
}

fn exit_with(error: &anyhow::Error) -> ! {
    eprintln!("brokerd: {error:#}");
    std::process::exit(1);
}

/// Windows: a start on demand claims the user's named mutex; when another brokerd holds it, it
/// waits for that one to serve instead.
#[cfg(windows)]
fn on_demand_turn(socket: &std::path::Path) -> Result<Option<StartTurn>> {
    match brokerd::pipe::claim(socket).context("cannot claim brokerd's mutex")? {
        Some(instance) => Ok(Some(instance)),
        None => {
            brokerd::pipe::wait_until_served(socket, START_PATIENCE)?;
            Ok(None)
        }
    }
}

/// A start on demand leaves the caller's session (kubectl's Ctrl-C must not reach it, and it
/// must outlive the shim), then waits its turn behind any other start.
#[cfg(unix)]
fn on_demand_turn(socket: &std::path::Path) -> Result<Option<StartTurn>> {
    // Fails only for a process group leader, which a freshly spawned child is not.
    let _ = rustix::process::setsid();
    match listener::start_turn(socket, broker_proto::current_uid(), START_PATIENCE)? {
        listener::StartTurn::Serving => Ok(None),
        listener::StartTurn::Ours(lock) => Ok(Some(lock)),
    }
}

/// Logging to stderr; the filter is RUST_LOG when set, else the configuration's `log_level`,
/// which a reload may change. Returns the handle that changes it.
fn init_logging(
    config_level: Option<&str>,
    log_file: Option<std::fs::File>,
) -> Option<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>> {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = from_env
        .as_deref()
        .or(config_level)
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let (writer, ansi) = match log_file {
        Some(file) => (BoxMakeWriter::new(Arc::new(file)), false),
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_target(false),
        )
        .init();
    // RUST_LOG pins the filter; only the configuration's level follows reloads.
    from_env.is_none().then_some(handle)
}

#[tokio::main]
async fn run(
    args: Args,
    socket: PathBuf,
    inherited: Option<Inherited>,
    #[cfg_attr(unix, allow(unused_mut))] mut start: Option<StartTurn>,
    unprotected: Vec<String>,
) -> Result<()> {
    let on_demand = start.is_some();
    let config_path = match args.config {
        Some(path) => path,
        None => config::default_path()
            .context("cannot find a configuration directory; give --config")?,
    };
    let settings = Arc::new(Settings::load(config_path)?);
    if on_demand && !settings.get().start_on_demand {
        anyhow::bail!(
            "start on demand is turned off (start_on_demand = false in {}); start brokerd \
             yourself, or install it as a service: brokerctl service install",
            settings.path().display()
        );
    }
    let state_dir = args.state_dir.clone().or_else(paths::state_dir);
    // An explicit state dir (tests, odd set-ups) keeps the log beside the index.
    let log_dir = args.state_dir.clone().or_else(paths::log_dir);
    // A start on demand has no terminal or journal to log to; nor has a windowless brokerd.
    let log_file = match (on_demand || cfg!(windows), &log_dir) {
        (true, Some(dir)) => Some(paths::open_log(dir)?),
        (true, None) => anyhow::bail!("cannot find a home directory for brokerd.log"),
        (false, _) => None,
    };
    let log_handle = init_logging(settings.get().log_level.as_deref(), log_file);
    for failure in unprotected {
        tracing::warn!("{failure}");
    }

    let (store, index): (Arc<dyn SecretStore>, Option<SessionIndex>) = match args.store {
        StoreChoice::Keyring | StoreChoice::SecretService | StoreChoice::KernelKeyring => {
            let state_dir = state_dir
                .context("cannot find a home directory for the session index; give --state-dir")?;
            let store: Arc<dyn SecretStore> = match args.store {
                StoreChoice::SecretService => Arc::new(KeyringStore::new()),
                StoreChoice::KernelKeyring => kernel_keyring()?,
                _ => brokerd::store::os_keyring(STORE_PROBE),
            };
            (store, Some(SessionIndex::new(&state_dir)))
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

    #[cfg(unix)]
    let (listener, forward) = {
        let uid = broker_proto::current_uid();
        let listener = match inherited {
            Some(socket) => listener::adopt(socket, uid)?,
            None => listener::bind(&socket, uid)?,
        };
        // The forwarding socket, under the same rules; brokerd serves without one if it cannot.
        let forward_path = broker_proto::forward_socket_path(&listener.path);
        let forward = listener::bind(&forward_path, uid).map_err(|e| {
            tracing::warn!("no forwarding socket: {e}");
            e.to_string()
        });
        (listener, forward)
    };
    // Windows: the user's one brokerd (the named mutex, claimed here unless a start on demand
    // did), then the pipe.
    #[cfg(windows)]
    let (listener, _instance) = {
        let _ = inherited;
        let instance = match start.take() {
            Some(instance) => instance,
            None => brokerd::pipe::claim(&socket)
                .context("cannot claim brokerd's mutex")?
                .with_context(|| {
                    format!("another brokerd already serves on {}", socket.display())
                })?,
        };
        (brokerd::pipe::PipeListener::bind(&socket)?, instance)
    };
    let socket = listener.path.clone();
    // The store that is really there: a question that needs no unlock, briefly.
    let store = match (
        broker.store_reachable(STORE_PROBE).await,
        broker.store().caveat(),
    ) {
        (None, None) => broker.store_backend().to_string(),
        (None, Some(caveat)) => format!("{}, {caveat}", broker.store_backend()),
        (Some(problem), _) => format!("{}, NOT usable now: {problem}", broker.store_backend()),
    };
    tracing::info!(
        "serving on {}{} (secret store: {}; configuration: {})",
        socket.display(),
        if inherited_listener(&listener) {
            ", passed by the service manager"
        } else if on_demand {
            ", started on demand"
        } else {
            ""
        },
        store,
        settings.path().display()
    );
    config::watch::spawn_reloader(settings.clone());
    if let Some(handle) = log_handle {
        follow_log_level(&settings, handle);
    }
    tokio::spawn(scheduler::run(broker.clone()));

    let stop = shutdown_signal()?;
    // The readiness signal for whoever started us: the socket accepts connections from now on.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "ready {}", socket.display());
    let _ = stdout.flush();
    drop(stdout);
    // No-op unless a service manager asked (NOTIFY_SOCKET).
    #[cfg(unix)]
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if on_demand {
        // The client that started us stops reading: let go of its pipes and terminal, then of
        // the start lock, so that the next waiting start finds us serving.
        detach_stdio();
        drop(start);
    }

    let test_clock = test_clock.map(|clock| TestClockService {
        clock,
        broker: broker.clone(),
    });
    let shutdown = async {
        stop.await;
        #[cfg(unix)]
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    };
    // On a worker thread, not this one: #[tokio::main]'s own future runs outside the worker
    // pool, and accepting there would cost every new connection a hop between threads.
    #[cfg(unix)]
    let served = tokio::spawn(server::serve(
        listener,
        forward,
        broker.clone(),
        test_clock,
        shutdown,
    ));
    #[cfg(windows)]
    let served = tokio::spawn(server::serve(
        listener,
        broker.clone(),
        test_clock,
        shutdown,
    ));
    let served = served.await.context("the server task failed");
    // A rotated refresh token the store refused so far is tried once more before it is gone
    // with this process.
    if tokio::time::timeout(SHUTDOWN_SAVE, broker.save_all_unsaved())
        .await
        .is_err()
    {
        tracing::warn!("the secret store did not take every unsaved refresh token in time");
    }
    served??;
    Ok(())
}

/// `--store kernel-keyring`: only where Linux has one, and the kernel lets brokerd use it.
fn kernel_keyring() -> Result<Arc<dyn SecretStore>> {
    #[cfg(target_os = "linux")]
    {
        Ok(Arc::new(brokerd::store::KernelKeyringStore::open()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        anyhow::bail!("--store kernel-keyring: the kernel keyring exists on Linux only")
    }
}

#[cfg(unix)]
fn inherited_listener(listener: &listener::Listener) -> bool {
    listener.inherited
}

#[cfg(windows)]
fn inherited_listener(_listener: &brokerd::pipe::PipeListener) -> bool {
    false
}

/// Windows: the standard handles are the starting client's pipes, which it stops reading;
/// nothing is written to them after the readiness line (the log is a file), and they close
/// with this process. There is no controlling terminal to leave.
#[cfg(windows)]
fn detach_stdio() {}

/// Points stdin, stdout and stderr at /dev/null.
#[cfg(unix)]
fn detach_stdio() {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(null) => {
            let _ = rustix::stdio::dup2_stdin(&null);
            let _ = rustix::stdio::dup2_stdout(&null);
            let _ = rustix::stdio::dup2_stderr(&null);
        }
        Err(e) => tracing::warn!("cannot open /dev/null: {e}"),
    }
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

/// Windows: Ctrl-C or Ctrl-Break in a console brokerd runs in (`brokerd` started by hand), or
/// the end of the logon session or of the system. Started windowless, it has no console to get
/// Ctrl-C from: logging off stops it, as does ending its process.
#[cfg(windows)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_logoff, ctrl_shutdown};
    let mut c = ctrl_c().context("cannot watch Ctrl-C")?;
    let mut brk = ctrl_break().context("cannot watch Ctrl-Break")?;
    let logoff = ctrl_logoff().ok();
    let shutdown = ctrl_shutdown().ok();
    Ok(async move {
        let logoff = async move {
            match logoff {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let shutdown = async move {
            match shutdown {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = c.recv() => {}
            _ = brk.recv() => {}
            () = logoff => {}
            () = shutdown => {}
        }
    })
}

/// SIGTERM or SIGINT. The handlers are installed here, before brokerd says it is ready, so that
/// a stop that follows the readiness signal at once is still an orderly one.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
