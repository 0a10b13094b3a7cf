//! `brokerctl login`: run the Login stream and show each event.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use broker_proto::text::{is_openable_url, printable};
use broker_proto::v1::{self, broker_client::BrokerClient, login_event::Event};
use brokerd::config::{Config, save_profile};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tonic::transport::Channel;

use crate::output::{Format, Paint, errln, outln, status_reason, timestamp};
use crate::spec::SpecArgs;

#[derive(Args, Debug)]
#[command(
    after_help = "With --profile NAME and session flags, the flags are saved as profile \
    NAME in brokerd's configuration (over what it held), so that `--profile NAME` alone names \
    the session afterwards, in brokerctl and in broker-shim.\n\nWithout any session flag, it \
    completes the sign-in that a program without a terminal is waiting for (or lists them, when \
    several are)."
)]
pub struct LoginArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Print the sign-in URL instead of opening a browser
    #[arg(long)]
    no_browser: bool,
    /// ROPC: keep the password in the keyring, to sign in again when the refresh token
    /// runs out
    #[arg(long)]
    remember_password: bool,
    /// OpenID Connect: the client is confidential; read its secret from stdin (or a hidden
    /// prompt) and keep it in the keyring, to go with every grant
    #[arg(long)]
    client_secret_stdin: bool,
    /// Serve the session on the forwarding socket too, to the machines brokerd is forwarded
    /// to (`brokerctl forward`)
    #[arg(long)]
    allow_forwarding: bool,
    /// `json` prints one JSON object per line per event
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// `brokerctl login`: saves the profile when asked to, then signs in.
pub async fn command(args: LoginArgs, socket: &Path) -> Result<ExitCode> {
    let mut client = crate::connect(socket).await?;
    if args.spec.profile.is_none() && !args.spec.names_session_fields() {
        return match pending_login(&mut client).await? {
            Some(spec) => {
                let request = v1::LoginRequest {
                    spec: Some(spec),
                    credentials: Some(v1::Credentials::default()),
                    remember_password: args.remember_password,
                    allow_forwarding: args.allow_forwarding,
                };
                run(&mut client, request, args.no_browser, args.output).await
            }
            None => Ok(ExitCode::FAILURE),
        };
    }
    let spec = match &args.spec.profile {
        Some(name) if args.spec.names_session_fields() => {
            remember_profile(&mut client, name, &args.spec).await?
        }
        _ => args.spec.clone(),
    };
    let (spec, mut credentials) = spec.resolve()?;
    if args.client_secret_stdin {
        credentials.client_secret =
            read_secret(&format!("Client secret for {}: ", spec.client_id))?;
    }
    let credentials = complete_credentials(&spec, credentials)?;
    let request = v1::LoginRequest {
        spec: Some(spec),
        credentials: Some(credentials),
        remember_password: args.remember_password,
        allow_forwarding: args.allow_forwarding,
    };
    run(&mut client, request, args.no_browser, args.output).await
}

/// The one sign-in that programs without a terminal are waiting for. With none or several,
/// says so (listing them) and returns `None`.
async fn pending_login(client: &mut BrokerClient<Channel>) -> Result<Option<v1::SessionSpec>> {
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    let mut pending = status.pending_logins;
    match pending.len() {
        0 => {
            errln!(
                "brokerctl: no sign-in is waiting; name the session to sign in to: --server-id \
                 and --tenant-id (kubelogin's flags), or --profile NAME"
            );
            Ok(None)
        }
        1 => {
            let one = pending.remove(0);
            errln!(
                "Signing in to session {}, which {} program(s) without a terminal asked for.",
                one.session_id,
                one.callers
            );
            Ok(one.spec)
        }
        n => {
            errln!("brokerctl: {n} sign-ins are waiting; run the one you want:");
            for one in &pending {
                errln!(
                    "  {}   (session {}, asked by {} program(s))",
                    printable(&one.command),
                    one.session_id,
                    one.callers
                );
            }
            Ok(None)
        }
    }
}

/// Writes profile `name` (what the configuration held, with the flags over it) into the
/// configuration brokerd reads, and returns the flags to sign in with. Those name the fields
/// themselves rather than the profile, so the login does not wait for brokerd's reload.
async fn remember_profile(
    client: &mut BrokerClient<Channel>,
    name: &str,
    flags: &SpecArgs,
) -> Result<SpecArgs> {
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    let path = PathBuf::from(status.config.map(|c| c.path).unwrap_or_default());
    if path.as_os_str().is_empty() {
        anyhow::bail!("brokerd did not say which configuration file it reads");
    }
    let config = Config::load(&path)?;
    let profile = flags.over(&config.profiles.get(name).cloned().unwrap_or_default());
    let written = save_profile(&path, name, &profile)
        .with_context(|| format!("cannot save profile {name}"))?;
    if written {
        errln!("Saved profile {name} in {}.", path.display());
    }
    if !flags.certificate_authority.is_empty() || !flags.certificate_authority_data.is_empty() {
        errln!(
            "The issuer's certificate authority is not part of profile {name}: name this issuer \
             with its flags (--oidc-issuer-url … --certificate-authority …) where it is used."
        );
    }
    Ok(flags.with_fields_of(&profile))
}

/// Asks for what a non-interactive login needs and the environment did not give: a service
/// principal's secret, a PFX password, a ROPC password. Read from stdin when it is not a
/// terminal (for scripts: `… | brokerctl login --login spn …`), else at a hidden prompt. Never
/// from a command-line flag, which would end up in the shell's history.
pub fn complete_credentials(
    spec: &v1::SessionSpec,
    mut credentials: v1::Credentials,
) -> Result<v1::Credentials> {
    use v1::LoginMode;
    match spec.login_mode() {
        LoginMode::ServicePrincipal
            if credentials.client_secret.is_empty()
                && credentials.client_certificate_path.is_empty() =>
        {
            credentials.client_secret =
                read_secret(&format!("Client secret for {}: ", spec.client_id))?;
        }
        LoginMode::ServicePrincipal
            if credentials.client_certificate_password.is_empty()
                && !looks_like_pem(&credentials.client_certificate_path)
                && std::io::stdin().is_terminal() =>
        {
            credentials.client_certificate_password = rpassword::prompt_password(format!(
                "Password for {} (empty if none): ",
                credentials.client_certificate_path
            ))?;
        }
        LoginMode::Ropc if credentials.password.is_empty() => {
            credentials.password = read_secret(&format!("Password for {}: ", spec.username))?;
        }
        _ => {}
    }
    Ok(credentials)
}

fn looks_like_pem(path: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.trim_ascii_start().starts_with(b"-----BEGIN"))
}

/// A secret from stdin (one line, or everything piped in) or from a hidden prompt.
fn read_secret(prompt: &str) -> Result<String> {
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text.trim_end_matches(['\r', '\n']).to_string()
    };
    if secret.is_empty() {
        anyhow::bail!("no secret given (pipe it to stdin, or type it at the prompt)");
    }
    Ok(secret)
}

pub async fn run(
    client: &mut BrokerClient<Channel>,
    request: v1::LoginRequest,
    no_browser: bool,
    format: Format,
) -> Result<ExitCode> {
    let mut stream = match client.login(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Ok(failed(
                status_reason(&status),
                &broker_proto::error_message(&status),
                format,
            ));
        }
    };
    let mut waiting = Waiting::default();
    loop {
        let event = match stream.message().await {
            Ok(Some(v1::LoginEvent { event: Some(event) })) => event,
            Ok(Some(v1::LoginEvent { event: None })) => continue,
            Ok(None) => {
                return Ok(failed(
                    "INTERNAL",
                    "brokerd ended the login without a result",
                    format,
                ));
            }
            Err(status) => {
                return Ok(failed(
                    status_reason(&status),
                    &broker_proto::error_message(&status),
                    format,
                ));
            }
        };
        match event {
            Event::DeviceCode(code) => {
                show_device_code(&code, format);
                waiting.start(format, "Waiting for you to sign in with the code above");
            }
            Event::OpenUrl(open) => {
                open_url(&open.url, no_browser, format);
                waiting.start(format, "Waiting for you to sign in in the browser");
            }
            Event::LoggedIn(done) => {
                waiting.stop();
                let expires = timestamp(done.expires_at_unix);
                match format {
                    Format::Json => outln!(
                        "{}",
                        json!({
                            "event": "logged_in",
                            "session_id": done.session_id,
                            "account": (!done.account.is_empty()).then(|| printable(&done.account)),
                            "expires_at": expires,
                        })
                    ),
                    Format::Text => outln!(
                        "Signed in{} (session {}).",
                        if done.account.is_empty() {
                            String::new()
                        } else {
                            format!(" as {}", printable(&done.account))
                        },
                        done.session_id
                    ),
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::Failed(failure) => {
                waiting.stop();
                let reason = v1::ErrorReason::try_from(failure.reason)
                    .map(broker_proto::reason_name)
                    .unwrap_or("INTERNAL");
                return Ok(failed(reason, &failure.message, format));
            }
        }
    }
}

/// What the identity provider wrote is shown without control characters, in JSON too (a
/// script may print it).
fn show_device_code(code: &v1::DeviceCode, format: Format) {
    let message = printable(&code.message);
    let user_code = printable(&code.user_code);
    let verification_uri = printable(&code.verification_uri);
    match format {
        Format::Json => outln!(
            "{}",
            json!({
                "event": "device_code",
                "verification_uri": verification_uri,
                "user_code": user_code,
                "message": message,
                "expires_at": timestamp(code.expires_at_unix),
            })
        ),
        Format::Text => {
            let paint = Paint::stderr();
            errln!("{message}");
            errln!("\n    Code: {}\n", paint.apply(Paint::STRONG, &user_code));
        }
    }
    let _ = std::io::stdout().flush();
}

/// Shows (and unless told not to, opens) the sign-in URL brokerd sent. Only an `https://` or
/// loopback `http://` URL is opened: anything else is shown, plainly, and left alone.
fn open_url(url: &str, no_browser: bool, format: Format) {
    if !is_openable_url(url) {
        let shown = printable(url);
        if format == Format::Json {
            outln!(
                "{}",
                json!({ "event": "open_url", "url": shown, "opened": false })
            );
        }
        errln!("brokerd sent a sign-in URL that is not https:// (not opened): {shown}");
        return;
    }
    if format == Format::Json {
        outln!("{}", json!({ "event": "open_url", "url": url }));
        let _ = std::io::stdout().flush();
    }
    if no_browser {
        if format == Format::Text {
            errln!("Open this URL in a browser on this machine to sign in:\n\n    {url}\n");
        }
        return;
    }
    match webbrowser::open(url) {
        Ok(()) => {
            if format == Format::Text {
                errln!(
                    "Your browser has been opened to sign in. If it did not open, visit:\n\n    {url}\n"
                );
            }
        }
        Err(e) => {
            errln!("Could not open a browser ({e}); open this URL to sign in:\n\n    {url}\n")
        }
    }
}

/// A spinner on stderr while the user signs in. Only on a terminal: into a pipe or a log it
/// stays silent (one plain line says what is happening instead), and never with JSON output.
#[derive(Default)]
struct Waiting(Option<ProgressBar>);

impl Waiting {
    fn start(&mut self, format: Format, message: &'static str) {
        if format == Format::Json || self.0.is_some() {
            return;
        }
        if !std::io::stderr().is_terminal() {
            errln!("{message}...");
            return;
        }
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            spinner.set_style(style);
        }
        spinner.set_message(message);
        spinner.enable_steady_tick(Duration::from_millis(120));
        self.0 = Some(spinner);
    }

    fn stop(&mut self) {
        if let Some(spinner) = self.0.take() {
            spinner.finish_and_clear();
        }
    }
}

fn failed(reason: &str, message: &str, format: Format) -> ExitCode {
    let message = printable(message);
    match format {
        Format::Json => {
            outln!(
                "{}",
                json!({ "event": "failed", "reason": reason, "message": message })
            );
            ExitCode::FAILURE
        }
        Format::Text => crate::output::fail(&message),
    }
}
