//! broker-shim: kubectl's exec credential plugin. One RPC to brokerd, one ExecCredential out.
//!
//! Everything here runs on every kubectl invocation, so it stays small: no CLI framework, a
//! current-thread runtime, no logging framework. It never holds a refresh token.

mod args;
mod exec_credential;
mod login;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use broker_proto::v1::{
    Credentials, ErrorReason, GetTokenRequest, SessionSpec, broker_client::BrokerClient,
};
use tonic::transport::Channel;

use args::Command;
use exec_credential::ExecInfo;

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(fetch(spec, credentials, info))
}

async fn fetch(
    spec: SessionSpec,
    credentials: Credentials,
    info: ExecInfo,
) -> Result<String, String> {
    let socket = broker_proto::socket_path(None);
    let mut client = broker_proto::connect_or_start(&socket)
        .await
        .map_err(|e| e.to_string())?;
    match request_token(&mut client, &spec, &credentials).await {
        Ok(answer) => Ok(answer),
        Err(status)
            if broker_proto::error_reason(&status) == ErrorReason::LoginRequired
                && info.interactive =>
        {
            login::run(&mut client, &spec, &credentials).await?;
            request_token(&mut client, &spec, &credentials)
                .await
                .map_err(|status| broker_proto::error_message(&status))
        }
        Err(status) => Err(broker_proto::error_message(&status)),
    }
    .map(|answer| {
        exec_credential::exec_credential(
            info.api_version,
            &answer.access_token,
            answer.expires_at_unix,
        )
    })
}

async fn request_token(
    client: &mut BrokerClient<Channel>,
    spec: &SessionSpec,
    credentials: &Credentials,
) -> Result<broker_proto::v1::GetTokenResponse, tonic::Status> {
    client
        .get_token(GetTokenRequest {
            spec: Some(spec.clone()),
            credentials: Some(credentials.clone()),
        })
        .await
        .map(tonic::Response::into_inner)
}
