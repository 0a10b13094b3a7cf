//! broker-shim: kubectl's exec credential plugin. One RPC to brokerd, one ExecCredential out.
//!
//! Everything here runs on every kubectl invocation, so it stays small: no CLI framework, no
//! async runtime, no HTTP/2 library, no logging framework. It never holds a refresh token.

mod args;
mod login;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use broker_proto::exec_credential;
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
            match options
                .finish()
                .and_then(|(spec, credentials)| get_token(spec, credentials))
            {
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

fn fail(message: &str) -> ExitCode {
    eprintln!("broker-shim: {message}");
    ExitCode::FAILURE
}

/// Asks brokerd for a token and returns the ExecCredential to print.
fn get_token(spec: SessionSpec, credentials: Credentials) -> Result<String, String> {
    let info = exec_credential::exec_info(
        std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref(),
        std::io::stdin().is_terminal(),
    )?;
    let socket = broker_proto::socket_path(None);
    let mut channel = grpc::connect_or_start(&socket).map_err(|e| e.to_string())?;
    let request = GetTokenRequest {
        spec: Some(spec),
        credentials: Some(credentials),
    };
    let answer: GetTokenResponse = match channel.unary(grpc::GET_TOKEN, &request) {
        Ok(answer) => answer,
        Err(CallError::Failed(failure))
            if failure.reason() == ErrorReason::LoginRequired && info.interactive =>
        {
            login::run(&mut channel, &request)?;
            channel
                .unary(grpc::GET_TOKEN, &request)
                .map_err(|e| e.to_message())?
        }
        Err(error) => return Err(error.to_message()),
    };
    Ok(exec_credential::exec_credential(
        info.api_version,
        &answer.access_token,
        answer.expires_at_unix,
    ))
}
