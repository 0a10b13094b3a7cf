//! brokerd as a user service: what `brokerctl service install` writes and runs, as a [`Plan`]
//! rendered from the files in `packaging/` with this machine's paths filled in. Packages ship
//! those files as they are.
//!
//! The plan is data, built here without touching the system, so that both service managers'
//! plans are tested on any machine (macOS's included, which no machine here runs), and
//! `brokerctl service install --dry-run` shows exactly what an install would do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::LAUNCHD_LABEL;

const SERVICE: &str = include_str!("../../packaging/systemd/token-broker.service");
const SOCKET: &str = include_str!("../../packaging/systemd/token-broker.socket");
const PLIST: &str = include_str!("../../packaging/launchd/dev.token-broker.brokerd.plist");

/// Where the packaged files expect brokerd, and the placeholders of the agent's template.
const PACKAGED_BROKERD_SYSTEMD: &str = "/usr/bin/brokerd";
const PACKAGED_BROKERD_LAUNCHD: &str = "/usr/local/bin/brokerd";
const PACKAGED_LOG_LAUNCHD: &str = "/Users/USER/Library/Logs/token-broker/brokerd.log";
const PACKAGED_SOCKET_LAUNCHD: &str = "/private/var/folders/USER/T/token-broker-UID/broker.sock";
const PACKAGED_OWNER_LAUNCHD: &str = "<key>SockPathOwner</key>\n      <integer>501</integer>";

/// The label of the agent `brew services start token-broker` loads: a second brokerd under
/// launchd on the same socket, which must not be installed beside ours.
pub const HOMEBREW_LABEL: &str = "homebrew.mxcl.token-broker";

/// One step of an install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Make a directory (and its parents) if it is missing; `mode` for the last one.
    Dir {
        path: PathBuf,
        mode: u32,
    },
    File {
        path: PathBuf,
        text: String,
    },
    Run {
        argv: Vec<String>,
        on_failure: OnFailure,
    },
}

/// What a failed command means for the install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The install stops with the command's words.
    Stop,
    /// Nothing (`launchctl bootout` of an agent that was not loaded).
    Ignore,
    /// Try again: `launchctl bootstrap` right after a `bootout` fails with "Input/output error"
    /// (exit status 5) while launchd is still letting go of the old instance.
    Retry {
        status: i32,
        times: u32,
        pause: Duration,
    },
}

/// What `brokerctl service install` does, in order, and what it says when done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub done: String,
}

fn run(argv: &[&str], on_failure: OnFailure) -> Step {
    Step::Run {
        argv: argv.iter().map(ToString::to_string).collect(),
        on_failure,
    }
}

/// The systemd user units, file name and text, socket first, running `brokerd`.
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

/// Installing under systemd: the units in `unit_dir` (`~/.config/systemd/user`), reloaded,
/// enabled and started.
pub fn systemd_plan(unit_dir: &Path, brokerd: &Path) -> Plan {
    let [socket, service] = crate::paths::SYSTEMD_UNITS;
    let mut steps: Vec<Step> = systemd_units(brokerd)
        .into_iter()
        .map(|(name, text)| Step::File {
            path: unit_dir.join(name),
            text,
        })
        .collect();
    steps.push(run(
        &["systemctl", "--user", "daemon-reload"],
        OnFailure::Stop,
    ));
    steps.push(run(
        &["systemctl", "--user", "enable", "--now", socket, service],
        OnFailure::Stop,
    ));
    Plan {
        steps,
        done: "brokerd now starts at login and on the first connection to its socket; see \
               `brokerctl service status`."
            .into(),
    }
}

/// brokerd's LaunchAgent for one user.
#[derive(Clone, Debug)]
pub struct LaunchAgent {
    pub home: PathBuf,
    pub uid: u32,
    pub brokerd: PathBuf,
    /// The socket launchd listens on: the one every client of this user finds by default.
    pub socket: PathBuf,
}

impl LaunchAgent {
    pub fn plist_path(&self) -> PathBuf {
        self.home
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist"))
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.join("Library/Logs/token-broker/brokerd.log")
    }

    /// Where `brew services` keeps its agent for token-broker.
    pub fn homebrew_plist_path(&self) -> PathBuf {
        self.home
            .join("Library/LaunchAgents")
            .join(format!("{HOMEBREW_LABEL}.plist"))
    }

    /// The user's GUI domain, where LaunchAgents of a logged-in user run.
    pub fn domain(&self) -> String {
        format!("gui/{}", self.uid)
    }

    /// The agent as launchctl names it.
    pub fn service_target(&self) -> String {
        format!("{}/{LAUNCHD_LABEL}", self.domain())
    }

    /// The property list: `brokerd --socket SOCKET`, launchd listening on SOCKET for it, the
    /// log, the uid.
    pub fn plist(&self) -> String {
        let string = |value: &Path| {
            format!(
                "<string>{}</string>",
                xml_escape(&value.display().to_string())
            )
        };
        PLIST
            .replace(
                &format!("<string>{PACKAGED_BROKERD_LAUNCHD}</string>"),
                &string(&self.brokerd),
            )
            .replace(
                &format!("<string>{PACKAGED_SOCKET_LAUNCHD}</string>"),
                &string(&self.socket),
            )
            .replace(
                &format!("<string>{PACKAGED_LOG_LAUNCHD}</string>"),
                &string(&self.log_path()),
            )
            .replace(
                PACKAGED_OWNER_LAUNCHD,
                &format!(
                    "<key>SockPathOwner</key>\n      <integer>{}</integer>",
                    self.uid
                ),
            )
    }

    /// Installing: the directories launchd cannot make (it binds the socket and opens the log
    /// in them), the agent, any loaded instance booted out, the agent enabled (a `launchctl
    /// disable` is remembered across loads) and bootstrapped.
    pub fn plan(&self) -> Plan {
        let plist = self.plist_path();
        let mut steps = Vec::new();
        if let Some(dir) = self.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            steps.push(Step::Dir {
                path: dir.to_path_buf(),
                mode: 0o700,
            });
        }
        if let Some(dir) = self.log_path().parent() {
            steps.push(Step::Dir {
                path: dir.to_path_buf(),
                mode: 0o700,
            });
        }
        steps.push(Step::File {
            path: plist.clone(),
            text: self.plist(),
        });
        let target = self.service_target();
        steps.push(run(&["launchctl", "bootout", &target], OnFailure::Ignore));
        steps.push(run(&["launchctl", "enable", &target], OnFailure::Stop));
        steps.push(run(
            &[
                "launchctl",
                "bootstrap",
                &self.domain(),
                &plist.display().to_string(),
            ],
            OnFailure::Retry {
                status: 5,
                times: 5,
                pause: Duration::from_secs(1),
            },
        ));
        Plan {
            steps,
            done: format!(
                "brokerd now starts at login and when a client connects to {}; its log is {}.",
                self.socket.display(),
                self.log_path().display()
            ),
        }
    }
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

    fn agent() -> LaunchAgent {
        LaunchAgent {
            home: PathBuf::from("/Users/a&b"),
            uid: 502,
            brokerd: PathBuf::from("/opt/homebrew/bin/brokerd"),
            socket: PathBuf::from("/var/folders/x1/abc/T/token-broker-502/broker.sock"),
        }
    }

    #[test]
    fn the_agent_runs_the_given_brokerd_on_the_socket_launchd_listens_on() {
        let plist = agent().plist();
        assert!(plist.contains(
            "<string>/opt/homebrew/bin/brokerd</string>\n    <string>--socket</string>\n    \
             <string>/var/folders/x1/abc/T/token-broker-502/broker.sock</string>"
        ));
        assert!(plist.contains(
            "<key>SockPathName</key>\n      \
             <string>/var/folders/x1/abc/T/token-broker-502/broker.sock</string>"
        ));
        assert!(plist.contains("<key>SockPathOwner</key>\n      <integer>502</integer>"));
        assert!(plist.contains("<key>SockPathMode</key>\n      <integer>384</integer>"));
        assert!(
            plist.contains("<string>/Users/a&amp;b/Library/Logs/token-broker/brokerd.log</string>")
        );
        for placeholder in ["USER", "UID", PACKAGED_BROKERD_LAUNCHD, ">501<"] {
            assert!(
                !plist.contains(placeholder),
                "{placeholder} left in\n{plist}"
            );
        }
    }

    #[test]
    fn installing_the_agent_makes_what_launchd_cannot_then_replaces_any_loaded_one() {
        let plan = agent().plan();
        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|step| match step {
                Step::Dir { path, mode } => format!("dir {} {mode:o}", path.display()),
                Step::File { path, .. } => format!("file {}", path.display()),
                Step::Run { argv, on_failure } => format!("{} ({on_failure:?})", argv.join(" ")),
            })
            .collect();
        assert_eq!(
            steps,
            [
                "dir /var/folders/x1/abc/T/token-broker-502 700",
                "dir /Users/a&b/Library/Logs/token-broker 700",
                "file /Users/a&b/Library/LaunchAgents/dev.token-broker.brokerd.plist",
                "launchctl bootout gui/502/dev.token-broker.brokerd (Ignore)",
                "launchctl enable gui/502/dev.token-broker.brokerd (Stop)",
                "launchctl bootstrap gui/502 \
                 /Users/a&b/Library/LaunchAgents/dev.token-broker.brokerd.plist \
                 (Retry { status: 5, times: 5, pause: 1s })",
            ]
        );
        assert!(
            plan.done.contains("token-broker-502/broker.sock"),
            "{}",
            plan.done
        );
        assert_eq!(
            agent().homebrew_plist_path(),
            PathBuf::from("/Users/a&b/Library/LaunchAgents/homebrew.mxcl.token-broker.plist")
        );
    }

    #[test]
    fn installing_under_systemd_writes_both_units_then_enables_them() {
        let plan = systemd_plan(
            Path::new("/home/u/.config/systemd/user"),
            Path::new("/home/u/bin/brokerd"),
        );
        let files: Vec<&Path> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::File { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(
            files,
            [
                Path::new("/home/u/.config/systemd/user/token-broker.socket"),
                Path::new("/home/u/.config/systemd/user/token-broker.service")
            ]
        );
        assert_eq!(
            plan.steps.last(),
            Some(&run(
                &[
                    "systemctl",
                    "--user",
                    "enable",
                    "--now",
                    "token-broker.socket",
                    "token-broker.service"
                ],
                OnFailure::Stop
            ))
        );
    }

    #[test]
    fn the_agent_written_for_a_user_is_a_property_list_launchd_can_read() {
        use broker_tests::harness::{on_path, require};
        if !require("python3", on_path("python3")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let agent = LaunchAgent {
            home: PathBuf::from("/Users/a b"),
            uid: 501,
            brokerd: PathBuf::from("/Users/a b/.cargo/bin/brokerd"),
            socket: PathBuf::from("/var/folders/x1/abc/T/token-broker-501/broker.sock"),
        };
        let path = dir.path().join("agent.plist");
        std::fs::write(&path, agent.plist()).unwrap();
        let checked = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import plistlib, sys\n\
                 d = plistlib.load(open(sys.argv[1], 'rb'))\n\
                 sock = '/var/folders/x1/abc/T/token-broker-501/broker.sock'\n\
                 assert d['ProgramArguments'] == ['/Users/a b/.cargo/bin/brokerd', '--socket', sock], d\n\
                 assert d['StandardOutPath'] == '/Users/a b/Library/Logs/token-broker/brokerd.log', d\n\
                 l = d['Sockets']['Listeners']\n\
                 assert l == {'SockType': 'stream', 'SockPathName': sock, 'SockPathMode': 0o600, 'SockPathOwner': 501}, l\n\
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
        // On a Mac, Apple's own linter too (the macOS CI job runs this).
        if cfg!(target_os = "macos") && require("plutil", on_path("plutil")) {
            let lint = std::process::Command::new("plutil")
                .arg("-lint")
                .arg(&path)
                .output()
                .unwrap();
            assert!(lint.status.success(), "{lint:?}");
        }
    }
}
