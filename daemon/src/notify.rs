//! Telling the user something on their desktop, when no terminal is there to tell: a sign-in
//! that a GUI or background tool needed. On Linux a freedesktop notification over the session
//! bus (`org.freedesktop.Notifications`, which GNOME, KDE, dunst and mako all serve); on macOS
//! a user notification through `osascript`. Where neither is reachable the notice is dropped
//! (and logged): the caller already got the command in its error.
//!
//! Every notice is bounded in time: a desktop that does not answer holds nothing up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long a notification may take to be delivered.
const DEADLINE: Duration = Duration::from_secs(5);

/// The name notifications are sent under.
#[cfg(unix)]
const APP: &str = "token-broker";

/// What to tell: a title and one paragraph of plain text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub summary: String,
    pub body: String,
}

pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Something that shows notices to the user.
pub trait Notifier: Send + Sync {
    fn notify(&self, notice: Notice) -> Delivery<'_>;
}

/// The desktop's notifications, as this platform has them.
pub fn desktop() -> Arc<dyn Notifier> {
    Arc::new(Desktop)
}

struct Desktop;

impl Notifier for Desktop {
    fn notify(&self, notice: Notice) -> Delivery<'_> {
        Box::pin(async move {
            let delivery = tokio::task::spawn_blocking(move || deliver(&notice));
            match tokio::time::timeout(DEADLINE, delivery).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("the notification task failed: {e}")),
                Err(_) => Err(format!(
                    "the desktop did not take the notification within {} s",
                    DEADLINE.as_secs()
                )),
            }
        })
    }
}

/// freedesktop.org's Desktop Notifications: `Notify` on the session bus.
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn deliver(notice: &Notice) -> Result<(), String> {
    use std::collections::HashMap;
    use zbus::zvariant::Value;

    let bus =
        zbus::blocking::Connection::session().map_err(|e| format!("no D-Bus session bus: {e}"))?;
    let hints: HashMap<&str, Value<'_>> = HashMap::from([("urgency", Value::U8(1))]);
    bus.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            APP,
            0u32,
            "dialog-password",
            notice.summary.as_str(),
            // Servers may read the body as markup: it is plain text here.
            escape_markup(&notice.body),
            Vec::<&str>::new(),
            hints,
            -1i32,
        ),
    )
    .map_err(|e| format!("the notification service refused: {e}"))?;
    Ok(())
}

/// A macOS user notification, through AppleScript's `display notification`.
#[cfg(target_os = "macos")]
fn deliver(notice: &Notice) -> Result<(), String> {
    let script = format!(
        "display notification {} with title {}",
        applescript_string(&notice.body),
        applescript_string(&format!("{APP}: {}", notice.summary))
    );
    let output = std::process::Command::new("osascript")
        .args(["-e", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run osascript: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "osascript failed: {}",
            broker_proto::text::printable(String::from_utf8_lossy(&output.stderr).trim())
        ))
    }
}

#[cfg(not(unix))]
fn deliver(_notice: &Notice) -> Result<(), String> {
    Err("no desktop notifications on this platform".into())
}

/// Text as a freedesktop body, which servers may read as a subset of HTML.
pub fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text as an AppleScript string literal.
pub fn applescript_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reaches_the_desktop_as_text() {
        assert_eq!(
            escape_markup("run: brokerctl login --tenant-id <t> && <b>x</b>"),
            "run: brokerctl login --tenant-id &lt;t&gt; &amp;&amp; &lt;b&gt;x&lt;/b&gt;"
        );
        assert_eq!(
            applescript_string(r#"say "hi" \ bye"#),
            r#""say \"hi\" \\ bye""#
        );
    }
}
