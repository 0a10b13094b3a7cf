//! broker-shim: kubectl's exec credential plugin. One RPC to brokerd, one ExecCredential out.
//!
//! Everything here runs on every kubectl invocation, so it stays small: no CLI framework, no
//! async runtime, no HTTP/2 library, no logging framework. It never holds a refresh token.

mod args;
mod login;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use broker_proto::exec_credential;
use broker_proto::kubelogin::Browser;
use broker_proto::v1::{Credentials, ErrorReason, GetTokenRequest, GetTokenResponse, SessionSpec};

use broker_shim::grpc::{self, CallError};

use args::Command;

fn main() -> ExitCode {
    let mut argv = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => argv.push(arg),
            Err(arg) => return fail(&format!("argument {arg:?} is not valid UTF-8")),
        }
    }
    match args::parse(&argv) {
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("broker-shim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::GetToken(mut options)) => {
            options.apply_environment(&|name| std::env::var(name).ok());
            let timeout = options.timeout;
            let socket = options.socket.clone().map(std::path::PathBuf::from);
            let browser = options.browser.clone();
            match options.finish().and_then(|(spec, credentials)| {
                get_token(spec, credentials, timeout, socket.as_deref(), &browser)
            }) {
                Ok(credential) => {
                    let mut stdout = std::io::stdout().lock();
                    match writeln!(stdout, "{credential}").and_then(|()| stdout.flush()) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => fail(&format!("cannot write the credential: {e}")),
                    }
                }
                Err(message) => fail(&message),
            }
        }
        Err(message) => fail(&message),
    }
}

/// One line on stderr, whatever the message holds: brokerd's messages may quote the IdP.
fn fail(message: &str) -> ExitCode {
    eprintln!("broker-shim: {}", broker_proto::text::printable(message));
    ExitCode::FAILURE
}

/// How long a `get-token` may take without `--timeout`: when a login may run at the terminal,
/// long enough for a person to finish it (brokerd's own login timeout, 5 minutes by default,
/// ends it first); otherwise long enough for brokerd to start and refresh through a slow IdP
/// (its requests time out after 30 s). kubectl sets no limit of its own on a plugin.
const INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const TIMEOUT: Duration = Duration::from_secs(90);

/// Asks brokerd for a token and returns the ExecCredential to print.
fn get_token(
    spec: SessionSpec,
    credentials: Credentials,
    timeout: Option<Duration>,
    socket: Option<&std::path::Path>,
    browser: &Browser,
) -> Result<String, String> {
    let info = exec_credential::exec_info(
        std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref(),
        std::io::stdin().is_terminal(),
    )?;
    let timeout = timeout.unwrap_or(if info.interactive {
        INTERACTIVE_TIMEOUT
    } else {
        TIMEOUT
    });
    let deadline = Instant::now() + timeout;
    let socket = broker_proto::socket_path(socket);
    let mut channel = grpc::connect_or_start(&socket, deadline).map_err(|e| e.to_string())?;
    let needs_protocol = spec.needs_protocol();
    let request = GetTokenRequest {
        spec: Some(spec),
        credentials: Some(credentials),
        interactive: info.interactive,
    };
    let (answer, protocol): (GetTokenResponse, _) =
        match channel.unary_from(grpc::GET_TOKEN, &request) {
            Ok(answer) => answer,
            Err(CallError::Failed(failure))
                if failure.reason() == ErrorReason::LoginRequired && info.interactive =>
            {
                match login::run(&mut channel, &request, browser) {
                    Ok(()) => {}
                    // A forwarded brokerd signs in where it runs; its answer said how.
                    Err(login::LoginError::NotHere) => return Err(failure.to_message()),
                    Err(login::LoginError::Failed(why)) => return Err(why),
                }
                channel
                    .unary_from(grpc::GET_TOKEN, &request)
                    .map_err(|e| e.to_message())?
            }
            Err(error) => return Err(error.to_message()),
        };
    // A brokerd older than the flags it was sent has answered for another session.
    if let Some(why) = broker_proto::too_old(needs_protocol, protocol.as_deref()) {
        return Err(why);
    }
    Ok(exec_credential::exec_credential(
        info.api_version,
        &answer.access_token,
        answer.expires_at_unix,
    ))
}
