//! The real Secret Service for tests: a private D-Bus session bus with gnome-keyring on it,
//! set up working or broken in the ways keyrings break (no provider, no default collection,
//! locked, session-only).

use std::path::Path;
use std::process::{Child, Stdio};

use super::process::line_channel;
use super::{DEADLINE, Sandbox, on_path};

/// A private D-Bus session bus with gnome-keyring's Secret Service on it, unlocked: the real
/// OS keyring of a Linux desktop, headless. Both go away when this is dropped.
pub struct SecretService {
    bus: Child,
    pub address: String,
}

/// How the Secret Service of a test is set up: working, or broken in one of the ways keyrings
/// break in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyringSetup {
    /// gnome-keyring with an unlocked login keyring as the default collection.
    Unlocked,
    /// gnome-keyring started without a password: no login keyring, so no default collection
    /// (as on WSL).
    NoDefaultCollection,
    /// A session bus with no Secret Service provider on it (and no service activation).
    BusOnly,
}

impl SecretService {
    /// Whether the pieces are installed (packages dbus, gnome-keyring, libsecret-tools).
    pub fn available() -> bool {
        on_path("dbus-daemon")
            && on_path("dbus-send")
            && on_path("gnome-keyring-daemon")
            && on_path("secret-tool")
    }

    /// Starts a bus under the sandbox's runtime dir and an unlocked gnome-keyring on it, and
    /// points the sandbox's processes at it.
    pub fn start(sandbox: &mut Sandbox) -> Self {
        Self::start_with(sandbox, KeyringSetup::Unlocked)
    }

    pub fn start_with(sandbox: &mut Sandbox, setup: KeyringSetup) -> Self {
        let socket = sandbox.runtime_dir.join("bus");
        let mut bus = sandbox.command(Path::new("dbus-daemon"));
        if setup == KeyringSetup::BusOnly {
            // The stock session configuration would start gnome-keyring on the first call to
            // org.freedesktop.secrets; this one starts nothing.
            let config = sandbox.root().join("bus-without-activation.conf");
            std::fs::write(
                &config,
                format!(
                    "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration \
                     1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                     <busconfig><type>session</type><listen>unix:path={}</listen>\
                     <auth>EXTERNAL</auth><policy context=\"default\">\
                     <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                     <allow own=\"*\"/></policy></busconfig>\n",
                    socket.display()
                ),
            )
            .expect("bus config");
            bus.arg(format!("--config-file={}", config.display()));
        } else {
            bus.arg("--session")
                .arg(format!("--address=unix:path={}", socket.display()));
        }
        let mut bus = bus
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        // The address line is the bus's readiness signal.
        let lines = line_channel(bus.stdout.take().expect("stdout"));
        let address = lines
            .recv_timeout(DEADLINE)
            .expect("dbus-daemon prints its address when it listens");
        sandbox.set_env("DBUS_SESSION_BUS_ADDRESS", &address);
        if setup == KeyringSetup::BusOnly {
            return SecretService { bus, address };
        }

        // `--unlock` reads the login keyring's password from stdin (creating the keyring on
        // first use); the launcher exits once the daemon serves.
        let mut keyring = sandbox.command(Path::new("gnome-keyring-daemon"));
        keyring.arg(match setup {
            KeyringSetup::Unlocked => "--unlock",
            _ => "--start",
        });
        let mut keyring = keyring
            .arg("--components=secrets")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon starts");
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().expect("stdin");
            if setup == KeyringSetup::Unlocked {
                stdin.write_all(b"test-keyring-password").expect("password");
            }
        }
        let status = keyring.wait().expect("gnome-keyring-daemon launcher exits");
        assert!(status.success(), "gnome-keyring-daemon failed: {status}");
        SecretService { bus, address }
    }

    /// Calls a method of the Secret Service with dbus-send (secret-tool cannot lock).
    fn call(&self, sandbox: &Sandbox, method: &str, args: &[&str]) {
        let output = sandbox
            .command(Path::new("dbus-send"))
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
            ])
            .arg(format!("org.freedesktop.Secret.Service.{method}"))
            .args(args)
            .output()
            .expect("dbus-send runs");
        assert!(
            output.status.success(),
            "dbus-send {method} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The gnome-keyring-daemon serving this bus, found by the bus address in its
    /// environment.
    pub fn daemon_pid(&self) -> Option<u32> {
        let wanted = format!("DBUS_SESSION_BUS_ADDRESS={}", self.address);
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                if !String::from_utf8_lossy(&cmdline).contains("gnome-keyring-daemon") {
                    return None;
                }
                let environ = std::fs::read(entry.path().join("environ")).ok()?;
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
                    .then_some(pid)
            })
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the keyring daemon: a hung keyring, as a
    /// stuck or swapped-out gnome-keyring is.
    pub fn hang(&self, hung: bool) {
        let pid = self
            .daemon_pid()
            .expect("gnome-keyring-daemon runs for this bus");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        let signal = if hung {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, signal).expect("signal the keyring daemon");
    }

    /// Locks the login keyring, as a screen lock or a timeout would.
    pub fn lock_login_keyring(&self, sandbox: &Sandbox) {
        self.call(
            sandbox,
            "Lock",
            &["array:objpath:/org/freedesktop/secrets/collection/login"],
        );
    }

    /// Makes the in-memory session collection the default one.
    pub fn make_session_collection_default(&self, sandbox: &Sandbox) {
        self.call(
            sandbox,
            "SetAlias",
            &[
                "string:default",
                "objpath:/org/freedesktop/secrets/collection/session",
            ],
        );
    }

    /// `secret-tool lookup service token-broker username <key>`: the secret, if stored.
    pub fn lookup(sandbox: &Sandbox, key: &str) -> Option<String> {
        let output = sandbox
            .command(Path::new("secret-tool"))
            .args(["lookup", "service", "token-broker", "username", key])
            .output()
            .expect("secret-tool runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // gnome-keyring-daemon leaves when its bus does.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
