//! `brokerctl status`.

use std::process::ExitCode;

use anyhow::Result;
use broker_proto::v1::{self, broker_client::BrokerClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::output::{Format, Paint, relative, short_duration, timestamp};

pub async fn run(
    client: &mut BrokerClient<Channel>,
    format: Format,
    watch: bool,
) -> Result<ExitCode> {
    if watch {
        return follow(client, format).await;
    }
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&to_json(&status))?),
        Format::Text => print_text(&status),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--watch`: the table once (text), then one line per session event until brokerd stops or
/// the user interrupts.
async fn follow(client: &mut BrokerClient<Channel>, format: Format) -> Result<ExitCode> {
    // Subscribed once the answer's headers arrive: nothing that happens after this is missed.
    let mut events = client
        .watch_events(v1::WatchEventsRequest {})
        .await?
        .into_inner();
    match format {
        Format::Json => println!("{}", json!({ "event": "watching" })),
        Format::Text => {
            let status = client.status(v1::StatusRequest {}).await?.into_inner();
            print_text(&status);
            println!("\nWatching session events (Ctrl-C to stop)...");
        }
    }
    let paint = Paint::stdout();
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => anyhow::bail!("brokerd ended the watch (it is shutting down)"),
            // Whatever the transport says, it means the same to the person watching.
            Err(status) => anyhow::bail!(
                "the watch ended: brokerd stopped or dropped the connection ({})",
                status.message()
            ),
        };
        match format {
            Format::Json => println!("{}", event_json(&event)),
            Format::Text => println!("{}", event_line(&event, &paint)),
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

fn event_name(kind: v1::SessionEventKind) -> &'static str {
    match kind {
        v1::SessionEventKind::Refreshed => "refreshed",
        v1::SessionEventKind::RefreshFailed => "refresh_failed",
        v1::SessionEventKind::LoginRequired => "login_required",
        v1::SessionEventKind::LoggedIn => "logged_in",
        v1::SessionEventKind::LoggedOut => "logged_out",
        v1::SessionEventKind::Lagged => "missed",
        v1::SessionEventKind::Unspecified => "unknown",
    }
}

/// The documented shape of one `brokerctl status --watch --output json` line.
fn event_json(event: &v1::SessionEvent) -> Value {
    if event.kind() == v1::SessionEventKind::Lagged {
        return json!({ "event": "missed", "count": event.missed });
    }
    json!({
        "event": event_name(event.kind()),
        "session_id": event.session_id,
        "at": timestamp(event.at_unix),
        "message": (!event.message.is_empty()).then_some(&event.message),
        "session": event.session.as_ref().map(session_json),
    })
}

fn event_line(event: &v1::SessionEvent, paint: &Paint) -> String {
    let kind = event.kind();
    if kind == v1::SessionEventKind::Lagged {
        return format!(
            "({} events were missed: this terminal fell behind)",
            event.missed
        );
    }
    let style = match kind {
        v1::SessionEventKind::Refreshed | v1::SessionEventKind::LoggedIn => Paint::GOOD,
        v1::SessionEventKind::RefreshFailed => Paint::WARN,
        _ => Paint::BAD,
    };
    let session = event.session.as_ref();
    let account = session
        .map(|s| s.account.as_str())
        .filter(|a| !a.is_empty())
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let expires = || {
        session
            .and_then(|s| relative(s.token_expires_at_unix))
            .map(|r| format!("token expires {r}"))
            .unwrap_or_default()
    };
    let detail = match kind {
        v1::SessionEventKind::Refreshed | v1::SessionEventKind::LoggedIn => expires(),
        v1::SessionEventKind::RefreshFailed => format!(
            "{}; next try {}",
            event.message,
            session
                .and_then(|s| relative(s.next_refresh_unix))
                .unwrap_or_else(|| "when asked".into())
        ),
        v1::SessionEventKind::LoginRequired => {
            format!("{}; sign in with brokerctl login", event.message)
        }
        _ => String::new(),
    };
    format!(
        "{}  {}  {}{account}  {detail}",
        timestamp(event.at_unix).unwrap_or_default(),
        paint.apply(style, &format!("{:<14}", event_name(kind))),
        event.session_id
    )
    .trim_end()
    .to_string()
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
    // A session always has a mode; brokerd resolved it.
    broker_proto::login_mode_name(spec.login_mode()).unwrap_or("-")
}

/// One session, as `status --output json` and `status --watch --output json` show it.
fn session_json(s: &v1::SessionInfo) -> Value {
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
}

/// The documented JSON shape of `brokerctl status --output json`.
fn to_json(status: &v1::StatusResponse) -> Value {
    let sessions: Vec<Value> = status.sessions.iter().map(session_json).collect();
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
        "brokerd {} (pid {}), up {}, on {}",
        status.version,
        status.pid,
        short_duration(std::time::Duration::from_secs(status.uptime_seconds)),
        status.socket_path
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
    // The state, last, is the only coloured cell: padding never has to count escape codes.
    let paint = Paint::stdout();
    let line = |cells: &[&str], state: &str| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}  {state}", padded.join("  "));
    };
    line(&header[..8], header[8]);
    for row in &rows {
        let cells: Vec<&str> = row[..8].iter().map(String::as_str).collect();
        let style = match row[8].as_str() {
            "fresh" => Paint::GOOD,
            "login_required" => Paint::BAD,
            _ => Paint::WARN,
        };
        line(&cells, &paint.apply(style, &row[8]));
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
