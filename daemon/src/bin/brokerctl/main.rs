//! brokerctl: the human interface to brokerd.

mod docs;
mod doctor;
mod forward;
mod kubeconfig;
mod login;
mod output;
mod service;
mod spec;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use broker_proto::v1::{self, broker_client::BrokerClient};
use clap::{CommandFactory, Parser, Subcommand};
use tonic::transport::Channel;

use output::{Format, fail};
use spec::SessionArgs;

#[derive(Parser, Debug)]
#[command(
    name = "brokerctl",
    version,
    about = "Control token-broker: sign in, see sessions, sign out",
    propagate_version = true
)]
struct Cli {
    /// brokerd's socket [default: $TOKEN_BROKER_SOCKET, else
    /// $XDG_RUNTIME_DIR/token-broker/broker.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the daemon and every session it knows
    Status {
        /// Then follow session events (refreshed, refresh failed, login required, logged in,
        /// logged out) until interrupted
        #[arg(long, short = 'w')]
        watch: bool,
        /// `text` fits 100 columns, `wide` shows every column, `json` is for scripts
        #[arg(long, short = 'o', value_enum, default_value_t = status::StatusFormat::Text)]
        output: status::StatusFormat,
        /// The kubeconfig whose contexts to show [default: every file of $KUBECONFIG, else
        /// ~/.kube/config]
        #[arg(long, value_name = "PATH")]
        kubeconfig: Option<PathBuf>,
    },
    /// Sign in to a session (the same flags as `broker-shim get-token`)
    Login(login::LoginArgs),
    /// Sign out: remove a session's refresh token from the keyring and forget the session
    Logout {
        #[command(flatten)]
        session: SessionArgs,
        /// Sign out of every session
        #[arg(long, conflicts_with_all = ["session_id", "server_id", "profile"])]
        all: bool,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Redeem a session's refresh token now
    Refresh {
        #[command(flatten)]
        session: SessionArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Check the daemon, keyring, service, kubeconfig, network and clock; say how to fix each
    /// problem. Exit status: 0 all passed, 1 warnings, 2 failures
    Doctor(doctor::DoctorArgs),
    /// Work with kubeconfig files
    Kubeconfig {
        #[command(subcommand)]
        command: KubeconfigCommand,
    },
    /// Tokens for other machines: the sessions the forwarding socket serves, and SSH
    /// sessions that carry it
    Forward {
        #[command(subcommand)]
        command: forward::ForwardCommand,
    },
    /// Run brokerd as a user service (systemd on Linux, launchd on macOS)
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Print a shell completion script, e.g. `brokerctl completions bash >
    /// ~/.local/share/bash-completion/completions/brokerctl`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of brokerctl (one per command) and brokerd
    Man {
        /// The directory to write them into [default: print brokerctl(1) to stdout]
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KubeconfigCommand {
    /// Switch users from kubelogin (either project) or the legacy azure auth-provider to
    /// broker-shim, moving secrets into the keyring; shows the diff and keeps a backup
    Convert(kubeconfig::ConvertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => fail(&output::describe(&error)),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let socket = broker_proto::socket_path(cli.socket.as_deref());
    match cli.command {
        Command::Kubeconfig {
            command: KubeconfigCommand::Convert(args),
        } => kubeconfig::run(args, &socket).await,
        Command::Doctor(args) => doctor::run(args, &socket).await,
        Command::Service { command } => service::run(command, &socket).await,
        Command::Forward { command } => forward::run(command, &socket).await,
        Command::Completions { shell } => {
            docs::completions(shell, Cli::command());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out_dir } => docs::man(Cli::command(), out_dir.as_deref()),
        Command::Status {
            output,
            watch,
            kubeconfig,
        } => {
            status::run(
                &mut connect(&socket).await?,
                output,
                watch,
                kubeconfig.as_deref(),
            )
            .await
        }
        Command::Login(args) => login::command(args, &socket).await,
        Command::Logout {
            session,
            all,
            output,
        } => {
            let request = if all {
                v1::LogoutRequest {
                    session: None,
                    all: true,
                }
            } else {
                v1::LogoutRequest {
                    session: Some(session.to_wire()?),
                    all: false,
                }
            };
            let answer = connect(&socket).await?.logout(request).await?.into_inner();
            output::print_logout(&answer, output);
            Ok(ExitCode::SUCCESS)
        }
        Command::Refresh { session, output } => {
            let request = v1::RefreshRequest {
                session: Some(session.to_wire()?),
            };
            let answer = connect(&socket).await?.refresh(request).await?.into_inner();
            output::print_refresh(&answer, output);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// brokerd, started on demand when nothing answers.
async fn connect(socket: &std::path::Path) -> Result<BrokerClient<Channel>> {
    Ok(broker_proto::connect_or_start(socket).await?)
}
