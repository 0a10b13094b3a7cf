//! How brokerctl prints: text for people, JSON (a documented, stable shape) for programs.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker_proto::v1;
use clap::ValueEnum;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `println!` for brokerctl: a stdout closed early (`brokerctl status | head -1`) ends the
/// program quietly, with success, instead of panicking; any other failure to write is one line
/// and exit status 1.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!`, likewise.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `eprintln!`, likewise for stderr.
macro_rules! errln {
    () => { $crate::output::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {errln, out, outln};

pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        closed(&e);
    }
}

pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stderr().lock().write_fmt(args) {
        closed(&e);
    }
}

/// Writes bytes to stdout under the same rule.
pub fn write_stdout_bytes(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        closed(&e);
    }
}

/// Whoever read our output stopped: nothing more to say to anyone.
fn closed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(
        std::io::stderr(),
        "brokerctl: cannot write the output: {error}"
    );
    std::process::exit(1);
}

/// Colour for people at a terminal; plain text for pipes and files, and wherever NO_COLOR is
/// set (https://no-color.org).
pub struct Paint {
    on: bool,
}

impl Paint {
    pub const GOOD: anstyle::Style = anstyle::AnsiColor::Green.on_default();
    pub const WARN: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();
    pub const BAD: anstyle::Style = anstyle::AnsiColor::Red.on_default().bold();
    pub const STRONG: anstyle::Style = anstyle::Style::new().bold();

    pub fn stdout() -> Self {
        use std::io::IsTerminal;
        Self::when(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Self {
        use std::io::IsTerminal;
        Self::when(std::io::stderr().is_terminal())
    }

    fn when(terminal: bool) -> Self {
        Paint {
            on: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub fn apply(&self, style: anstyle::Style, text: &str) -> String {
        if self.on {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }
}

/// Prints one error line and returns the failure exit code. The message may quote an identity
/// provider (through brokerd): no control character of it reaches the terminal.
pub fn fail(message: &str) -> ExitCode {
    errln!("brokerctl: {}", broker_proto::text::printable(message));
    ExitCode::FAILURE
}

/// One line for any error: a status from brokerd says it in its message; anything else is
/// printed with its causes.
pub fn describe(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        return broker_proto::error_message(status);
    }
    format!("{error:#}")
}

/// The reason name scripts branch on, for a status from brokerd.
pub fn status_reason(status: &tonic::Status) -> &'static str {
    match broker_proto::error_reason(status) {
        v1::ErrorReason::Unspecified => "INTERNAL",
        reason => broker_proto::reason_name(reason),
    }
}

/// RFC 3339 in UTC, or None for the wire's "0 = never". Any number brokerd sends formats
/// (clamped to the year 9999).
pub fn timestamp(unix: i64) -> Option<String> {
    (unix > 0).then(|| broker_proto::exec_credential::rfc3339(unix))
}

/// "in 41 min" / "3 h ago", for people.
pub fn relative(unix: i64) -> Option<String> {
    let secs = u64::try_from(unix).ok().filter(|s| *s > 0)?;
    let then = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    let now = SystemTime::now();
    Some(match then.duration_since(now) {
        Ok(ahead) if ahead.as_secs() == 0 => "now".into(),
        Ok(ahead) => format!("in {}", short_duration(ahead)),
        Err(behind) if behind.duration().as_secs() == 0 => "just now".into(),
        Err(behind) => format!("{} ago", short_duration(behind.duration())),
    })
}

pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} days", s / 86_400),
    }
}

pub fn print_logout(answer: &v1::LogoutResponse, format: Format) {
    let removed = &answer.session_ids;
    let store = if answer.secret_store == "memory" {
        "brokerd's memory".to_string()
    } else if answer.secret_store.is_empty() {
        "the secret store".to_string()
    } else {
        format!("the keyring ({})", answer.secret_store)
    };
    match format {
        Format::Json => outln!("{}", json!({ "logged_out": removed })),
        Format::Text if removed.is_empty() => outln!("No sessions to log out of."),
        Format::Text => {
            for id in removed {
                outln!("Logged out of session {id}; its refresh token left {store}.");
            }
        }
    }
}

pub fn print_refresh(answer: &v1::RefreshResponse, format: Format) {
    let expires = timestamp(answer.expires_at_unix);
    match format {
        Format::Json => outln!(
            "{}",
            json!({ "session_id": answer.session_id, "expires_at": expires })
        ),
        Format::Text => outln!(
            "Refreshed session {}; the new token expires {} ({}).",
            answer.session_id,
            expires.as_deref().unwrap_or("at an unknown time"),
            relative(answer.expires_at_unix).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_far_away_print_without_panicking() {
        assert_eq!(timestamp(i64::MAX).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert!(relative(i64::MAX).is_some_and(|r| r.starts_with("in ")));
        assert_eq!(relative(-1), None);
    }

    #[test]
    fn zero_is_never() {
        assert_eq!(timestamp(0), None);
        assert_eq!(
            timestamp(1_700_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(short_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(short_duration(Duration::from_secs(41 * 60 + 5)), "41 min");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 120)),
            "3 h 2 min"
        );
        assert_eq!(short_duration(Duration::from_secs(9 * 86_400)), "9 days");
    }
}
