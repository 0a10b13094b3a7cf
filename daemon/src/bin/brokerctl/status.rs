//! `brokerctl status`: the daemon, its sessions, and each kubeconfig context that runs
//! broker-shim with the session it uses. The default table fits 100 columns; `-o wide` adds
//! the rest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use broker_proto::v1::{self, broker_client::BrokerClient};
use brokerd::config::Config;
use brokerd::kubeconfig::{kubeconfig_files, shim_contexts};
use brokerd::spec::SpecInput;
use clap::ValueEnum;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::output::{Format, Paint, outln, relative, short_duration, timestamp};

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A table that fits 100 columns
    Text,
    /// Every column
    Wide,
    Json,
}

impl StatusFormat {
    fn base(self) -> Format {
        match self {
            StatusFormat::Json => Format::Json,
            StatusFormat::Text | StatusFormat::Wide => Format::Text,
        }
    }
}

/// The widest the default table may be.
const COLUMNS: usize = 100;

pub async fn run(
    client: &mut BrokerClient<Channel>,
    format: StatusFormat,
    watch: bool,
    kubeconfig: Option<&Path>,
) -> Result<ExitCode> {
    if watch {
        return follow(client, format).await;
    }
    let status = client.status(v1::StatusRequest {}).await?.into_inner();
    let contexts = contexts(&status, kubeconfig);
    match format {
        StatusFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&status, &contexts))?
        ),
        StatusFormat::Text => print_text(&status, &contexts, false),
        StatusFormat::Wide => print_text(&status, &contexts, true),
    }
    Ok(ExitCode::SUCCESS)
}

/// A kubeconfig context that runs broker-shim, and where its session stands.
struct ContextRow {
    file: PathBuf,
    context: String,
    user: String,
    /// The session its flags name, or why they name none.
    session: Result<String, String>,
    /// That session as brokerd has it; `None`: brokerd does not know it (nobody signed in).
    known: Option<v1::SessionInfo>,
}

/// Every context of the kubeconfig files (as kubectl finds them) whose user runs broker-shim.
/// Their flags are read as the shim reads them in this environment, and a profile as brokerd's
/// configuration defines it.
fn contexts(status: &v1::StatusResponse, explicit: Option<&Path>) -> Vec<ContextRow> {
    let Some(files) = kubeconfig_files(explicit, &|name| std::env::var_os(name)) else {
        return Vec::new();
    };
    let config = status
        .config
        .as_ref()
        .map(|c| Config::load(Path::new(&c.path)).unwrap_or_default())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(found) = shim_contexts(&text) else {
            continue;
        };
        for context in found {
            let session = context.options.and_then(|mut options| {
                options.apply_environment(&|name| std::env::var(name).ok());
                let (wire, _) = options.finish()?;
                let (profile, input) = SpecInput::from_wire(wire)
                    .map_err(|mode| format!("login mode {mode} is unknown"))?;
                config
                    .resolve(&profile, &input)
                    .map(|spec| spec.id().to_string())
                    .map_err(|e| e.to_string())
            });
            let known = session.as_ref().ok().and_then(|id| {
                status
                    .sessions
                    .iter()
                    .find(|s| &s.session_id == id)
                    .cloned()
            });
            rows.push(ContextRow {
                file: file.clone(),
                context: context.context,
                user: context.user,
                session,
                known,
            });
        }
    }
    rows
}

/// What a context's session state is, in words.
fn context_state(row: &ContextRow) -> String {
    match (&row.session, &row.known) {
        (Err(why), _) => format!("its flags name no session: {why}"),
        (Ok(_), None) => "not signed in".to_string(),
        (Ok(_), Some(info)) => state_name(info.state).to_string(),
    }
}

/// `--watch`: the table once (text), then one line per session event until brokerd stops or
/// the user interrupts.
async fn follow(client: &mut BrokerClient<Channel>, format: StatusFormat) -> Result<ExitCode> {
    let wide = format == StatusFormat::Wide;
    let format = format.base();
    // Subscribed once the answer's headers arrive: nothing that happens after this is missed.
    let mut events = client
        .watch_events(v1::WatchEventsRequest {})
        .await?
        .into_inner();
    match format {
        Format::Json => outln!("{}", json!({ "event": "watching" })),
        Format::Text => {
            let status = client.status(v1::StatusRequest {}).await?.into_inner();
            print_text(&status, &[], wide);
            outln!("\nWatching session events (Ctrl-C to stop)...");
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
            Format::Json => outln!("{}", event_json(&event)),
            Format::Text => outln!("{}", event_line(&event, &paint)),
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
        "unsaved_refresh_token": (!s.unsaved_refresh_token.is_empty())
            .then_some(&s.unsaved_refresh_token),
        "last_error": (!s.last_error.is_empty()).then_some(&s.last_error),
        "last_error_codes": s.last_error_codes,
        "tokens_served": s.tokens_served,
        "refreshes": s.refreshes,
        "refresh_failures": s.refresh_failures,
        "forwarding_allowed": s.forwarding_allowed,
        "forwarded_tokens_served": s.forwarded_tokens_served,
    })
}

/// The documented JSON shape of `brokerctl status --output json`.
fn to_json(status: &v1::StatusResponse, contexts: &[ContextRow]) -> Value {
    let sessions: Vec<Value> = status.sessions.iter().map(session_json).collect();
    let contexts: Vec<Value> = contexts
        .iter()
        .map(|row| {
            json!({
                "kubeconfig": row.file.display().to_string(),
                "context": row.context,
                "user": row.user,
                "session_id": row.session.as_ref().ok(),
                "error": row.session.as_ref().err(),
                "signed_in": row.known.is_some(),
                "state": context_state(row),
                "account": row.known.as_ref().map(|k| &k.account).filter(|a| !a.is_empty()),
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
        "secret_store_problem": (!status.secret_store_problem.is_empty())
            .then_some(&status.secret_store_problem),
        "secret_store_caveat": (!status.secret_store_caveat.is_empty())
            .then_some(&status.secret_store_caveat),
        "index_error": (!status.index_error.is_empty()).then_some(&status.index_error),
        "forward_socket": (!status.forward_socket.is_empty()).then_some(&status.forward_socket),
        "forward_socket_problem": (!status.forward_socket_problem.is_empty())
            .then_some(&status.forward_socket_problem),
        "pending_logins": status.pending_logins.iter().map(|p| json!({
            "session_id": p.session_id,
            "command": p.command,
            "since": timestamp(p.since_unix),
            "callers": p.callers,
            "notified": p.notified,
        })).collect::<Vec<_>>(),
        "config": {
            "path": config.path,
            "loaded_at": timestamp(config.loaded_at_unix),
            "error": (!config.error.is_empty()).then_some(&config.error),
            "profiles": config.profiles,
        },
        "sessions": sessions,
        "contexts": contexts,
    })
}

/// What the forwarding socket serves, in one line.
fn forwarding_line(status: &v1::StatusResponse) -> String {
    if status.forward_socket.is_empty() {
        return format!(
            "forwarding: not served ({})",
            if status.forward_socket_problem.is_empty() {
                "this brokerd does not say why"
            } else {
                &status.forward_socket_problem
            }
        );
    }
    let allowed: Vec<String> = status
        .sessions
        .iter()
        .filter(|s| s.forwarding_allowed)
        .map(|s| format!("{} ({} served)", s.session_id, s.forwarded_tokens_served))
        .collect();
    if allowed.is_empty() {
        format!(
            "forwarding: {} serves no session (allow one: brokerctl forward allow SESSION)",
            status.forward_socket
        )
    } else {
        format!(
            "forwarding: {} serves {}",
            status.forward_socket,
            allowed.join(", ")
        )
    }
}

/// A cell no wider than `max` characters: longer text ends in an ellipsis.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A table: a header and rows of cells, each column as wide as its widest cell, the last
/// column (coloured by `style`) unpadded so that escape codes never need counting.
fn print_table(header: &[&str], rows: &[Vec<String>], style: impl Fn(&str) -> anstyle::Style) {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let paint = Paint::stdout();
    let line = |cells: Vec<&str>, last: String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}  {last}", padded.join("  "));
    };
    line(
        header[..columns - 1].to_vec(),
        header[columns - 1].to_string(),
    );
    for row in rows {
        let cells: Vec<&str> = row[..columns - 1].iter().map(String::as_str).collect();
        let last = &row[columns - 1];
        line(cells, paint.apply(style(last), last));
    }
}

fn state_style(state: &str) -> anstyle::Style {
    match state {
        "fresh" => Paint::GOOD,
        "login_required" | "not signed in" => Paint::BAD,
        _ => Paint::WARN,
    }
}

fn print_text(status: &v1::StatusResponse, contexts: &[ContextRow], wide: bool) {
    outln!(
        "brokerd {} (pid {}), up {}, on {}",
        status.version,
        status.pid,
        short_duration(std::time::Duration::from_secs(status.uptime_seconds)),
        status.socket_path
    );
    if status.secret_store_problem.is_empty() && !status.secret_store_caveat.is_empty() {
        outln!(
            "secret store: {} ({})",
            status.secret_store,
            status.secret_store_caveat
        );
    } else if status.secret_store_problem.is_empty() {
        outln!("secret store: {}", status.secret_store);
    } else {
        outln!(
            "secret store: {} — NOT usable now: {}",
            status.secret_store,
            status.secret_store_problem
        );
    }
    if let Some(config) = &status.config {
        outln!("configuration: {}", config.path);
        if !config.error.is_empty() {
            outln!(
                "  NOT reloaded, the previous configuration stays in force: {}",
                config.error
            );
        }
    }
    if !status.index_error.is_empty() {
        outln!(
            "session index: NOT saved ({}); the sessions work now, and a restarted brokerd \
             finds them again through the secret store",
            status.index_error
        );
    }
    outln!("{}", forwarding_line(status));
    if status.sessions.is_empty() {
        outln!(
            "\nNo sessions yet. Sign in with: brokerctl login --server-id <id> --tenant-id <id>"
        );
    } else {
        outln!();
        let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        let account = |s: &v1::SessionInfo| {
            if s.account.is_empty() {
                "-".to_string()
            } else {
                s.account.clone()
            }
        };
        if wide {
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
            let rows: Vec<Vec<String>> = status
                .sessions
                .iter()
                .map(|s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    vec![
                        s.session_id.clone(),
                        account(s),
                        spec.tenant_id.clone(),
                        login_mode(&spec).to_string(),
                        dash(relative(s.token_expires_at_unix)),
                        dash(relative(s.last_refresh_unix)),
                        dash(relative(s.next_refresh_unix)),
                        s.tokens_served.to_string(),
                        state_name(s.state).to_string(),
                    ]
                })
                .collect();
            print_table(&header, &rows, state_style);
        } else {
            // Every column but the account's is short and bounded; the account gets what is
            // left of 100 columns.
            let header = [
                "SESSION",
                "ACCOUNT",
                "LOGIN",
                "EXPIRES",
                "NEXT REFRESH",
                "STATE",
            ];
            let mut rows: Vec<Vec<String>> = status
                .sessions
                .iter()
                .map(|s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    vec![
                        fit(&s.session_id, 12),
                        account(s),
                        fit(login_mode(&spec), 16),
                        fit(&dash(relative(s.token_expires_at_unix)), 13),
                        fit(&dash(relative(s.next_refresh_unix)), 13),
                        fit(state_name(s.state), 14),
                    ]
                })
                .collect();
            let others: usize = (0..header.len())
                .filter(|&column| column != 1)
                .map(|column| {
                    rows.iter()
                        .map(|row| row[column].chars().count())
                        .chain([header[column].len()])
                        .max()
                        .unwrap_or(0)
                })
                .sum();
            let account_width = COLUMNS
                .saturating_sub(others + 2 * (header.len() - 1))
                .max(12);
            for row in &mut rows {
                row[1] = fit(&row[1], account_width);
            }
            print_table(&header, &rows, state_style);
        }
    }
    if !contexts.is_empty() {
        outln!();
        let header = ["CONTEXT", "SESSION", "STATE"];
        let rows: Vec<Vec<String>> = contexts
            .iter()
            .map(|row| {
                let session = row.session.as_deref().unwrap_or("-");
                let state = context_state(row);
                if wide {
                    vec![row.context.clone(), session.to_string(), state]
                } else {
                    vec![fit(&row.context, 40), fit(session, 12), fit(&state, 44)]
                }
            })
            .collect();
        print_table(&header, &rows, |state| {
            state_style(state.split(':').next().unwrap_or(state))
        });
    }
    for pending in &status.pending_logins {
        outln!(
            "\nWaiting for a sign-in ({} program(s) without a terminal asked{}): {}\n  \
             `brokerctl login` with no arguments completes it.",
            pending.callers,
            if pending.notified {
                "; a desktop notification was raised"
            } else {
                ""
            },
            pending.command
        );
    }
    for s in &status.sessions {
        if !s.unsaved_refresh_token.is_empty() {
            outln!(
                "\n{}: its refresh token is in brokerd's memory only ({}); brokerd stores it as \
                 soon as the secret store takes it, and on shutdown",
                s.session_id,
                s.unsaved_refresh_token
            );
        }
    }
    for s in status.sessions.iter().filter(|s| !s.last_error.is_empty()) {
        outln!(
            "\n{}: last error ({} of {} refreshes failed): {}",
            s.session_id,
            s.refresh_failures,
            s.refreshes + s.refresh_failures,
            s.last_error
        );
    }
    if contexts
        .iter()
        .any(|r| r.session.is_ok() && r.known.is_none())
    {
        outln!(
            "\nA context not signed in signs in when kubectl runs it at a terminal, or with \
             brokerctl login and its user's flags."
        );
    }
}
