//! `brokerctl login`: run the Login stream and show each event.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use broker_proto::v1::{self, broker_client::BrokerClient, login_event::Event};
use serde_json::json;
use tonic::transport::Channel;

use crate::output::{Format, status_reason, timestamp};

pub async fn run(
    client: &mut BrokerClient<Channel>,
    spec: v1::SessionSpec,
    no_browser: bool,
    format: Format,
) -> Result<ExitCode> {
    let mut stream = match client.login(v1::LoginRequest { spec: Some(spec) }).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Ok(failed(
                status_reason(&status),
                &broker_proto::error_message(&status),
                format,
            ));
        }
    };
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
            Event::DeviceCode(code) => show_device_code(&code, format),
            Event::OpenUrl(open) => open_url(&open.url, no_browser, format),
            Event::LoggedIn(done) => {
                let expires = timestamp(done.expires_at_unix);
                match format {
                    Format::Json => println!(
                        "{}",
                        json!({
                            "event": "logged_in",
                            "session_id": done.session_id,
                            "account": (!done.account.is_empty()).then_some(&done.account),
                            "expires_at": expires,
                        })
                    ),
                    Format::Text => println!(
                        "Signed in{} (session {}).",
                        if done.account.is_empty() {
                            String::new()
                        } else {
                            format!(" as {}", done.account)
                        },
                        done.session_id
                    ),
                }
                return Ok(ExitCode::SUCCESS);
            }
            Event::Failed(failure) => {
                let reason = v1::ErrorReason::try_from(failure.reason)
                    .map(broker_proto::reason_name)
                    .unwrap_or("INTERNAL");
                return Ok(failed(reason, &failure.message, format));
            }
        }
    }
}

fn show_device_code(code: &v1::DeviceCode, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "event": "device_code",
                "verification_uri": code.verification_uri,
                "user_code": code.user_code,
                "message": code.message,
                "expires_at": timestamp(code.expires_at_unix),
            })
        ),
        Format::Text => {
            eprintln!("{}", code.message);
            eprintln!("\n    code: {}\n", code.user_code);
            eprintln!("Waiting for you to finish signing in...");
        }
    }
    let _ = std::io::stdout().flush();
}

fn open_url(url: &str, no_browser: bool, format: Format) {
    if format == Format::Json {
        println!("{}", json!({ "event": "open_url", "url": url }));
        let _ = std::io::stdout().flush();
    }
    if no_browser {
        if format == Format::Text {
            eprintln!("Open this URL in a browser on this machine to sign in:\n\n    {url}\n");
        }
        return;
    }
    match webbrowser::open(url) {
        Ok(()) => {
            if format == Format::Text {
                eprintln!(
                    "Your browser has been opened to sign in. If it did not open, visit:\n\n    {url}\n"
                );
            }
        }
        Err(e) => {
            eprintln!("Could not open a browser ({e}); open this URL to sign in:\n\n    {url}\n")
        }
    }
}

fn failed(reason: &str, message: &str, format: Format) -> ExitCode {
    match format {
        Format::Json => {
            println!(
                "{}",
                json!({ "event": "failed", "reason": reason, "message": message })
            );
            ExitCode::FAILURE
        }
        Format::Text => crate::output::fail(message),
    }
}
