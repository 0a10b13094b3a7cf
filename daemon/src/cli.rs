//! brokerd's command line, in the library so that `brokerctl man` can write brokerd's man page
//! from the same definition brokerd parses.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "brokerd",
    version,
    about = "token-broker's daemon: keeps Entra ID refresh tokens in the OS keyring and serves \
             access tokens to kubectl over a Unix socket",
    after_help = "Logs go to stderr, filtered by RUST_LOG, else the configuration's log_level \
                  (default: info). Once the socket serves, brokerd prints one line to stdout: \
                  `ready <socket path>`. SIGHUP reloads the configuration. Under systemd, brokerd \
                  serves the socket it is passed (LISTEN_FDS) and reports READY and STOPPING \
                  (NOTIFY_SOCKET)."
)]
pub struct DaemonArgs {
    /// Unix socket to serve [default: $TOKEN_BROKER_SOCKET, else
    /// $XDG_RUNTIME_DIR/token-broker/broker.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Configuration file [default: $TOKEN_BROKER_CONFIG, else
    /// $XDG_CONFIG_HOME/token-broker/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Where refresh tokens live. `memory` forgets everything when brokerd exits: for tests
    /// and demos only.
    #[arg(long, value_enum, default_value_t = StoreChoice::Keyring)]
    pub store: StoreChoice,

    /// Directory for the session index [default: $XDG_STATE_HOME/token-broker]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Started by a client (broker-shim, brokerctl) that found nothing on the socket: wait
    /// behind any other such start, exit at once if a brokerd answers by then, leave the
    /// caller's session and terminal, log to brokerd.log in the state directory, and stop if
    /// the configuration says `start_on_demand = false`
    #[arg(long)]
    pub on_demand: bool,

    /// Serve a service that lets tests move brokerd's clock. Never use it otherwise.
    #[arg(long, hide = true)]
    pub test_clock: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreChoice {
    /// The OS keyring: the Keychain on macOS; on Linux the Secret Service, or the kernel
    /// keyring when no Secret Service answers at start
    Keyring,
    /// Linux: the Secret Service only (gnome-keyring, KeePassXC, KWallet)
    SecretService,
    /// Linux: the kernel's persistent keyring for this user (survives logouts, not reboots)
    KernelKeyring,
    /// Process memory: forgets every login when brokerd stops
    Memory,
}
