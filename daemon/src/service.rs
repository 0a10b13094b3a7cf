//! brokerd as a user service: the systemd units and the launchd agent, rendered from the
//! files in `packaging/` with this machine's paths filled in. `brokerctl service install`
//! writes what these return; packages ship the files as they are.

use std::path::Path;

use crate::paths::LAUNCHD_LABEL;

const SERVICE: &str = include_str!("../../packaging/systemd/token-broker.service");
const SOCKET: &str = include_str!("../../packaging/systemd/token-broker.socket");
const PLIST: &str = include_str!("../../packaging/launchd/dev.token-broker.brokerd.plist");

/// Where the packaged files expect brokerd.
const PACKAGED_BROKERD_SYSTEMD: &str = "/usr/bin/brokerd";
const PACKAGED_BROKERD_LAUNCHD: &str = "/usr/local/bin/brokerd";
const PACKAGED_LOG_LAUNCHD: &str = "/Users/USER/Library/Logs/token-broker/brokerd.log";

/// The user units, file name and text, socket first, running `brokerd`.
pub fn systemd_units(brokerd: &Path) -> Vec<(&'static str, String)> {
    let exec = systemd_quote(&brokerd.display().to_string());
    let service = SERVICE.replace(
        &format!("ExecStart={PACKAGED_BROKERD_SYSTEMD}"),
        &format!("ExecStart={exec}"),
    );
    vec![
        ("token-broker.socket", SOCKET.to_string()),
        ("token-broker.service", service),
    ]
}

/// The LaunchAgent's file name and text, running `brokerd` and logging to `log`.
pub fn launchd_agent(brokerd: &Path, log: &Path) -> (String, String) {
    let plist = PLIST
        .replace(
            &format!("<string>{PACKAGED_BROKERD_LAUNCHD}</string>"),
            &format!(
                "<string>{}</string>",
                xml_escape(&brokerd.display().to_string())
            ),
        )
        .replace(
            &format!("<string>{PACKAGED_LOG_LAUNCHD}</string>"),
            &format!(
                "<string>{}</string>",
                xml_escape(&log.display().to_string())
            ),
        );
    (format!("{LAUNCHD_LABEL}.plist"), plist)
}

/// A path as systemd's ExecStart= reads it: quoted when it has spaces, `%` and `\` escaped.
fn systemd_quote(path: &str) -> String {
    let escaped = path.replace('\\', "\\\\").replace('%', "%%");
    if escaped.contains([' ', '\t', '"']) {
        format!("\"{}\"", escaped.replace('"', "\\\""))
    } else {
        escaped
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_runs_the_given_brokerd() {
        let units = systemd_units(Path::new("/home/al ice/.cargo/bin/brokerd"));
        assert_eq!(units[0].0, "token-broker.socket");
        assert!(
            units[0]
                .1
                .contains("ListenStream=%t/token-broker/broker.sock")
        );
        assert!(units[0].1.contains("SocketMode=0600"));
        assert!(
            units[1]
                .1
                .contains("ExecStart=\"/home/al ice/.cargo/bin/brokerd\"\n"),
            "{}",
            units[1].1
        );
        assert!(units[1].1.contains("Type=notify"));
        assert!(!units[1].1.contains(PACKAGED_BROKERD_SYSTEMD));
    }

    #[test]
    fn the_agent_runs_the_given_brokerd_and_logs_where_told() {
        let (name, plist) = launchd_agent(
            Path::new("/opt/homebrew/bin/brokerd"),
            Path::new("/Users/a&b/Library/Logs/token-broker/brokerd.log"),
        );
        assert_eq!(name, "dev.token-broker.brokerd.plist");
        assert!(plist.contains("<string>/opt/homebrew/bin/brokerd</string>"));
        assert!(
            plist.contains("<string>/Users/a&amp;b/Library/Logs/token-broker/brokerd.log</string>")
        );
        assert!(!plist.contains("/Users/USER/"));
    }

    #[test]
    fn the_agent_written_for_a_user_is_a_property_list_launchd_can_read() {
        use broker_tests::harness::{on_path, require};
        if !require("python3", on_path("python3")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (name, plist) = launchd_agent(
            Path::new("/Users/a b/.cargo/bin/brokerd"),
            Path::new("/Users/a b/Library/Logs/token-broker/brokerd.log"),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, plist).unwrap();
        let checked = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import plistlib, sys\n\
                 d = plistlib.load(open(sys.argv[1], 'rb'))\n\
                 assert d['ProgramArguments'] == ['/Users/a b/.cargo/bin/brokerd'], d\n\
                 assert d['StandardOutPath'] == '/Users/a b/Library/Logs/token-broker/brokerd.log', d\n\
                 print(d['Label'])",
            )
            .arg(&path)
            .output()
            .unwrap();
        assert!(checked.status.success(), "{checked:?}");
        assert_eq!(
            String::from_utf8_lossy(&checked.stdout).trim(),
            LAUNCHD_LABEL
        );
    }
}
