//! Windows, run for real under Wine: brokerd.exe, brokerctl.exe and broker-shim.exe, cross-built
//! by `packaging/build-windows`, against the mock Entra ID on loopback.
//!
//! What Wine shows here: the named pipe end to end (brokerd started on demand, windowless, by
//! the first client; the shim's overlapped I/O; every client checking the server's user SID),
//! Credential Manager keeping a 4 KB refresh token across a restart (split over two
//! credentials), the Run key, and that the shim's exit is the end of its output (brokerd
//! inherits none of its caller's pipes). What it cannot: a second Windows user (Wine runs
//! every process as one SID), so the pipe's DACL and the refusal of another user's client are
//! shown only by reading the code (`daemon/src/pipe.rs`); and console windows (there is no
//! display): the test checks instead that brokerd.exe is a windowless (GUI subsystem) program.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use broker_tests::harness::{cargo, credential, on_path, require, success};
use broker_tests::mock_entra::{AKS_SERVER_ID, MockConfig, MockEntra, TENANT_ID};
use serde_json::Value;

/// Any one Wine command may take this long (the first starts the Wine server).
const WINE_TIMEOUT: &str = "120";

struct Wine {
    prefix: tempfile::TempDir,
    bin: tempfile::TempDir,
}

impl Wine {
    /// A fresh Wine prefix, and the three programs (with Wine 8's missing DLL) in one folder,
    /// as the zip unpacks them.
    fn new(built: &Path) -> Self {
        let wine = Wine {
            prefix: tempfile::tempdir().expect("a prefix directory"),
            bin: tempfile::tempdir().expect("a bin directory"),
        };
        for exe in ["brokerd.exe", "brokerctl.exe", "broker-shim.exe"] {
            std::fs::copy(built.join(exe), wine.bin.path().join(exe))
                .unwrap_or_else(|e| panic!("cannot copy {exe}: {e}"));
        }
        let dll = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-o"])
            .arg(wine.bin.path().join("bcryptprimitives.dll"))
            .arg(repo().join("tests/wine/bcryptprimitives.c"))
            .arg("-ladvapi32")
            .status()
            .expect("mingw's gcc runs");
        assert!(dll.success(), "building bcryptprimitives.dll failed");
        wine.boot();
        wine
    }

    /// Starts the Wine server and the prefix's services (creating the prefix the first time),
    /// their output going nowhere: they outlive the command that starts them, and started by a
    /// command whose output the test reads, they would hold its pipe open.
    fn boot(&self) {
        let quiet = |mut command: Command| {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("wine runs")
        };
        assert!(quiet(self.command("wineserver", &["-p"])).success());
        assert!(
            quiet(self.command("wineboot", &[])).success(),
            "wineboot failed"
        );
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg(WINE_TIMEOUT)
            .arg(program)
            .args(args)
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("TOKEN_BROKER_SOCKET")
            .stdin(Stdio::null());
        command
    }

    /// Runs one of the three programs; its output once it has exited and every holder of its
    /// stdout has let go (a brokerd that inherited it would hold it until the timeout).
    ///
    /// stderr goes through a file: Wine gives every process it starts its parent's Unix
    /// stderr for its own diagnostics, whatever the Windows handles say, so a brokerd started
    /// on demand holds the starter's Unix stderr (on Windows it holds nothing of its caller's:
    /// `broker_proto::pipe::keep_std_handles_from_children`).
    fn run(&self, exe: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let program = self.bin.path().join(exe);
        let mut command = self.command("wine", &[]);
        command.arg(&program).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut stderr = tempfile::tempfile().expect("a file for stderr");
        command.stderr(stderr.try_clone().expect("the file again"));
        let mut output = command.output().expect("wine runs");
        use std::io::{Read, Seek};
        stderr.rewind().expect("rewind");
        stderr.read_to_end(&mut output.stderr).expect("stderr");
        output
    }

    /// Stops every Windows process of the prefix at once, brokerd.exe among them: a crash,
    /// as far as brokerd knows (nothing is saved on the way out).
    fn kill_all(&self) {
        let status = self
            .command("wineserver", &["-k"])
            .status()
            .expect("wineserver runs");
        assert!(status.success());
        let _ = self.command("wineserver", &["-w"]).status();
        self.boot();
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = self.command("wineserver", &["-k"]).status();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// packaging/build-windows's debug build; its folder.
fn build_for_windows() -> PathBuf {
    let mut script = Command::new(repo().join("packaging/build-windows"));
    // Without the variables cargo set for this test crate (see harness::cargo).
    for (name, value) in cargo().get_envs() {
        if value.is_none() {
            script.env_remove(name);
        }
    }
    let output = script.output().expect("packaging/build-windows runs");
    assert!(
        output.status.success(),
        "packaging/build-windows failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    repo().join("target/windows/x86_64-pc-windows-gnu/debug")
}

/// The PE subsystem of an executable: 2 is a windowless (GUI) program, 3 a console one.
fn subsystem(exe: &Path) -> u16 {
    let bytes = std::fs::read(exe).expect("the executable");
    let at = |offset: usize, len: usize| bytes.get(offset..offset + len).expect("a PE header");
    let pe = u32::from_le_bytes(at(0x3c, 4).try_into().unwrap()) as usize;
    assert_eq!(at(pe, 4), b"PE\0\0", "{} is not a PE file", exe.display());
    // The optional header follows the 4-byte signature and the 20-byte file header; its
    // Subsystem field is at offset 68 (PE32+ as PE32).
    u16::from_le_bytes(at(pe + 24 + 68, 2).try_into().unwrap())
}

#[test]
fn under_wine_brokerd_serves_the_shim_on_its_pipe_and_credential_manager_keeps_a_4_kb_token() {
    if !require(
        "Wine and the Windows cross-build (wine, x86_64-w64-mingw32-gcc, Debian's /usr/bin/cargo)",
        on_path("wine")
            && on_path("x86_64-w64-mingw32-gcc")
            && Path::new("/usr/bin/cargo").exists(),
    ) {
        return;
    }
    let built = build_for_windows();
    assert_eq!(
        subsystem(&built.join("brokerd.exe")),
        2,
        "brokerd.exe must be windowless"
    );
    assert_eq!(subsystem(&built.join("broker-shim.exe")), 3);
    assert_eq!(subsystem(&built.join("brokerctl.exe")), 3);

    let wine = Wine::new(&built);
    // Refresh tokens longer than a credential's 2,560 bytes, as Entra's can be.
    let mock = MockEntra::start(MockConfig {
        auto_approve: true,
        device_code_interval: 1,
        refresh_token_length: 4096,
        ..MockConfig::default()
    });
    let authority = mock.authority_host();
    let session = [
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--authority-host",
        &authority,
    ];

    // Sign in: brokerctl.exe finds no brokerd on the pipe and starts brokerd.exe on demand.
    let mut login = vec!["login"];
    login.extend_from_slice(&session);
    login.extend_from_slice(&["--output", "json"]);
    let events = success(
        &wine.run("brokerctl.exe", &login, &[]),
        "brokerctl.exe login",
    );
    let done: Value = serde_json::from_str(events.lines().last().expect("events")).unwrap();
    assert_eq!(done["event"], "logged_in", "{events}");
    let issued = mock.issued_refresh_tokens();
    assert!(issued.iter().all(|t| t.len() > 4000), "4 KB refresh tokens");

    // kubectl's call: an ExecCredential from broker-shim.exe, over the pipe.
    let exec_info = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
    let mut get_token = vec!["get-token"];
    get_token.extend_from_slice(&session);
    let env = [("KUBERNETES_EXEC_INFO", exec_info)];
    let served_token = || {
        let token = credential(&wine.run("broker-shim.exe", &get_token, &env))["status"]["token"]
            .as_str()
            .expect("a token")
            .to_string();
        mock.verify(&token, AKS_SERVER_ID)
            .expect("a token the mock issued");
        token
    };
    served_token();

    let status = success(
        &wine.run("brokerctl.exe", &["status"], &[]),
        "brokerctl.exe status",
    );
    assert!(status.contains(r"\\.\pipe\token-broker-S-1-5-"), "{status}");
    assert!(status.contains("Windows Credential Manager"), "{status}");

    // brokerd.exe dies; the next kubectl run starts another, which finds the session in its
    // index and the refresh token in Credential Manager (the access token was in memory only).
    wine.kill_all();
    let refreshes = mock.requests("refresh_token");
    served_token();
    assert_eq!(
        mock.requests("refresh_token"),
        refreshes + 1,
        "the restarted brokerd redeemed the stored refresh token"
    );

    // Started at logon: the Run key, written, read back and removed.
    let install = success(
        &wine.run("brokerctl.exe", &["service", "install"], &[]),
        "service install",
    );
    assert!(
        install.contains(r"CurrentVersion\Run\token-broker"),
        "{install}"
    );
    let query = wine
        .command(
            "wine",
            &[
                "reg",
                "query",
                r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
                "/v",
                "token-broker",
            ],
        )
        .output()
        .expect("reg runs");
    let query = String::from_utf8_lossy(&query.stdout);
    assert!(query.contains("brokerd.exe"), "{query}");
    assert!(
        wine.run("brokerctl.exe", &["service", "status"], &[])
            .status
            .success()
    );
    success(
        &wine.run("brokerctl.exe", &["service", "uninstall"], &[]),
        "service uninstall",
    );
    assert_eq!(
        wine.run("brokerctl.exe", &["service", "status"], &[])
            .status
            .code(),
        Some(3)
    );

    // Signing out removes the token and both of its credentials; the next call needs a login.
    let logout = success(
        &wine.run("brokerctl.exe", &["logout", "--all"], &[]),
        "brokerctl.exe logout",
    );
    assert!(!logout.is_empty());
    let after = wine.run("broker-shim.exe", &get_token, &env);
    assert!(!after.status.success(), "no session after logout");
}
