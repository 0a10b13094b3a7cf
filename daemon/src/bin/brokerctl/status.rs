//! `brokerctl status`.

use std::process::ExitCode;

use anyhow::Result;
use broker_proto::v1::{self, broker_client::BrokerClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::output::{Format, relative, timestamp};

pub async fn run(client: &mut BrokerClient<Channel>, format: Format) -> Result<ExitCode> {
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&to_json(&status))?),
        Format::Text => print_text(&status),
    }
    Ok(ExitCode::SUCCESS)
}

fn state_name(state: i32) -> &'static str {
    match v1::SessionState::try_from(state) {
        Ok(v1::SessionState::Fresh) => "fresh",
        Ok(v1::SessionState::RefreshDue) => "refresh_due",
        Ok(v1::SessionState::Refreshing) => "refreshing",
        Ok(v1::SessionState::Degraded) => "degraded",
        Ok(v1::SessionState::LoginRequired) => "login_required",
        _ => "unknown",
    }
}

fn login_mode(spec: &v1::SessionSpec) -> &'static str {
    broker_proto::login_mode_name(spec.login_mode())
}

/// The documented JSON shape of `brokerctl status --output json`.
fn to_json(status: &v1::StatusResponse) -> Value {
    let sessions: Vec<Value> = status
        .sessions
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            json!({
                "id": s.session_id,
                "account": (!s.account.is_empty()).then_some(&s.account),
                "authority": s.authority,
                "environment": spec.environment,
                "tenant_id": spec.tenant_id,
                "client_id": spec.client_id,
                "server_id": spec.server_id,
                "login_mode": login_mode(&spec),
                "state": state_name(s.state),
                "token_expires_at": timestamp(s.token_expires_at_unix),
                "last_refresh_at": timestamp(s.last_refresh_unix),
                "next_refresh_at": timestamp(s.next_refresh_unix),
                "last_served_at": timestamp(s.last_served_unix),
                "last_error": (!s.last_error.is_empty()).then_some(&s.last_error),
                "last_error_codes": s.last_error_codes,
                "tokens_served": s.tokens_served,
                "refreshes": s.refreshes,
                "refresh_failures": s.refresh_failures,
            })
        })
        .collect();
    let config = status.config.clone().unwrap_or_default();
    json!({
        "version": status.version,
        "pid": status.pid,
        "uptime_seconds": status.uptime_seconds,
        "socket": status.socket_path,
        "secret_store": status.secret_store,
        "config": {
            "path": config.path,
            "loaded_at": timestamp(config.loaded_at_unix),
            "error": (!config.error.is_empty()).then_some(&config.error),
            "profiles": config.profiles,
        },
        "sessions": sessions,
    })
}

fn print_text(status: &v1::StatusResponse) {
    println!(
        "brokerd {} (pid {}), up {} s, on {}",
        status.version, status.pid, status.uptime_seconds, status.socket_path
    );
    println!("secret store: {}", status.secret_store);
    if let Some(config) = &status.config {
        println!("configuration: {}", config.path);
        if !config.error.is_empty() {
            println!(
                "  NOT reloaded, the previous configuration stays in force: {}",
                config.error
            );
        }
    }
    if status.sessions.is_empty() {
        println!(
            "\nNo sessions yet. Sign in with: brokerctl login --server-id <id> --tenant-id <id>"
        );
        return;
    }
    let header = [
        "SESSION",
        "ACCOUNT",
        "TENANT",
        "LOGIN",
        "TOKEN EXPIRES",
        "LAST REFRESH",
        "NEXT REFRESH",
        "SERVED",
        "STATE",
    ];
    let rows: Vec<[String; 9]> = status
        .sessions
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            [
                s.session_id.clone(),
                if s.account.is_empty() {
                    "-".into()
                } else {
                    s.account.clone()
                },
                spec.tenant_id.clone(),
                login_mode(&spec).to_string(),
                relative(s.token_expires_at_unix).unwrap_or_else(|| "-".into()),
                relative(s.last_refresh_unix).unwrap_or_else(|| "-".into()),
                relative(s.next_refresh_unix).unwrap_or_else(|| "-".into()),
                s.tokens_served.to_string(),
                state_name(s.state).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    for s in status.sessions.iter().filter(|s| !s.last_error.is_empty()) {
        println!(
            "\n{}: last error ({} of {} refreshes failed): {}",
            s.session_id,
            s.refresh_failures,
            s.refreshes + s.refresh_failures,
            s.last_error
        );
    }
}
