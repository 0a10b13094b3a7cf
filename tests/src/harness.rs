//! Fixtures for end-to-end tests: the project's binaries, a sandbox HOME with private XDG
//! directories and a socket path, brokerd started and stopped as a real process, and the rule
//! for tests that need system pieces (kubectl, D-Bus, gnome-keyring, root).
//!
//! Waits use readiness signals (brokerd's `ready` line, a child's exit, a line of output), each
//! bounded by a generous deadline so that a broken build fails instead of hanging.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::Value;

use crate::mock_entra::{AKS_SERVER_ID, MockConfig, MockEntra, TENANT_ID};

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub const EXEC_V1: &str = "client.authentication.k8s.io/v1";
pub const EXEC_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// Paths of the project's binaries, built once per test process.
pub struct Binaries {
    pub brokerd: PathBuf,
    pub brokerctl: PathBuf,
    pub shim: PathBuf,
    pub mock_entra: PathBuf,
}

/// Builds the workspace's binaries (a no-op when they are fresh) with the same cargo and
/// profile as this test, so that a test never runs a stale brokerd.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its own path");
        // Tests run from target/<profile>/deps/<test>, broker-bench from target/<profile>/.
        let mut profile_dir = exe.parent().expect("an executable has a directory");
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir = profile_dir
                .parent()
                .expect("deps/ is inside the profile dir");
        }
        let profile_dir = profile_dir.to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // A release build is built as it ships (broker-bench measures it); the tests' own
        // profile otherwise.
        let mut build = if profile_dir.file_name().is_some_and(|n| n == "release") {
            let mut script = Command::new(root.join("packaging/build-release"));
            for (name, value) in cargo().get_envs() {
                if value.is_none() {
                    script.env_remove(name);
                }
            }
            if let Some(cargo) = std::env::var_os("CARGO") {
                // The script's `cargo` is the one running this build.
                let dir = Path::new(&cargo).parent().map(Path::to_path_buf);
                if let (Some(dir), Some(path)) = (dir, std::env::var_os("PATH")) {
                    let mut dirs = vec![dir];
                    dirs.extend(std::env::split_paths(&path));
                    script.env("PATH", std::env::join_paths(dirs).expect("PATH"));
                }
            }
            script
        } else {
            let mut build = cargo();
            build.args(["build", "--workspace", "--bins"]);
            build
        };
        build
            .args(["--quiet", "--target-dir"])
            .arg(&target_dir)
            .current_dir(&root);
        let status = build.status().expect("the build runs");
        assert!(status.success(), "building the binaries failed");
        let bin = |name: &str| {
            let path = profile_dir.join(name);
            assert!(path.exists(), "{} was not built", path.display());
            path
        };
        Binaries {
            brokerd: bin("brokerd"),
            brokerctl: bin("brokerctl"),
            shim: bin("broker-shim"),
            mock_entra: bin("mock-entra"),
        }
    })
}

/// The cargo running these tests, without the variables cargo set for this test crate:
/// passed on, they would look like a change to build scripts that watch them (ring's does)
/// and rebuild half the tree every time.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_this_crate = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_for_this_crate {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The profile the tests (and so [`binaries`]) are built with: `dev` or `release`.
pub fn profile() -> &'static str {
    if binaries()
        .brokerd
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "release")
    {
        "release"
    } else {
        "dev"
    }
}

/// True when system tests must run: a missing piece is then a failure, not a skip.
pub fn system_tests_required() -> bool {
    std::env::var("TOKEN_BROKER_REQUIRE_SYSTEM_TESTS").is_ok_and(|v| v == "1")
}

/// Whether the test may go on, given that `what` is `available`. Prints a visible SKIPPED line
/// when it is not, or fails when system tests are required.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if system_tests_required() {
        panic!("{what} is required (TOKEN_BROKER_REQUIRE_SYSTEM_TESTS=1) but not available");
    }
    eprintln!(
        "SKIPPED: {what} is not available; set TOKEN_BROKER_REQUIRE_SYSTEM_TESTS=1 to fail instead"
    );
    false
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

pub fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// A temporary HOME with private XDG directories and a socket path, and the environment that
/// points every process at them. Processes get only this environment (plus PATH), so nothing
/// of the developer's own session leaks in.
pub struct Sandbox {
    root: tempfile::TempDir,
    pub home: PathBuf,
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    extra_env: Vec<(OsString, OsString)>,
    socket_env: bool,
}

impl Drop for Sandbox {
    /// A brokerd started on demand by a test's shims belongs to no `Daemon`: stop it with the
    /// sandbox, as logging out would.
    fn drop(&mut self) {
        if let Some(pid) = self.serving_pid()
            && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("tb-test-")
            .tempdir()
            .expect("temp dir");
        let home = root.path().join("home");
        let runtime_dir = root.path().join("run");
        for dir in [&home, &runtime_dir] {
            std::fs::create_dir_all(dir).expect("mkdir");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let state_dir = home.join(".local/state/token-broker");
        let socket = runtime_dir.join("token-broker/broker.sock");
        Sandbox {
            root,
            home,
            runtime_dir,
            state_dir,
            socket,
            extra_env: Vec::new(),
            socket_env: true,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The pid of whatever brokerd serves the sandbox's socket, asked over the socket itself;
    /// None when nothing answers.
    pub fn serving_pid(&self) -> Option<u32> {
        if std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            return None;
        }
        block_on(async {
            let mut client = broker_proto::connect(&self.socket).await.ok()?;
            let status = client
                .status(broker_proto::v1::StatusRequest {})
                .await
                .ok()?;
            Some(status.into_inner().pid)
        })
    }

    /// Leaves TOKEN_BROKER_SOCKET unset, so that processes find the socket at its default
    /// place, `$XDG_RUNTIME_DIR/token-broker/broker.sock` (which is where `socket` points).
    pub fn without_socket_env(&mut self) {
        self.socket_env = false;
    }

    /// Puts `dir` first on PATH for every process started from this sandbox (for fake tools).
    pub fn prepend_path(&mut self, dir: &Path) {
        let mut paths = vec![dir.to_path_buf()];
        if let Some(path) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&path));
        }
        let joined = std::env::join_paths(paths).expect("PATH joins");
        self.set_env("PATH", joined);
    }

    /// Writes an executable script into the sandbox's `bin/` (which `prepend_path` may put on
    /// PATH) and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.root().join("bin");
        std::fs::create_dir_all(&dir).expect("bin dir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A kubeconfig with one cluster (the fake API server) and one context per user; each user
    /// runs broker-shim with its arguments. Returns its path.
    pub fn kubeconfig(&self, api: &crate::apiserver::FakeApiServer, users: &[KubeUser]) -> PathBuf {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(api.ca_pem());
        let mut config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n",
            api.url()
        );
        for user in users {
            let args: Vec<String> = std::iter::once("get-token".to_string())
                .chain(user.args.iter().cloned())
                .map(|a| format!("{a:?}"))
                .collect();
            config.push_str(&format!(
                "- name: {}\n  user:\n    exec:\n      apiVersion: {}\n      command: {}\n      args: [{}]\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n      installHint: broker-shim is part of token-broker.\n",
                user.name,
                user.api_version,
                binaries().shim.display(),
                args.join(", ")
            ));
        }
        config.push_str("contexts:\n");
        for user in users {
            config.push_str(&format!(
                "- name: {0}\n  context: {{cluster: fake, user: {0}}}\n",
                user.name
            ));
        }
        config.push_str(&format!("current-context: {}\n", users[0].name));
        let path = self.home.join(".kube/config");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, config).expect("kubeconfig");
        path
    }

    /// `kubectl --kubeconfig <config> --context <context> get --raw /api`, with `env` added to
    /// kubectl's (and so the plugin's) environment.
    pub fn kubectl_get_api(&self, config: &Path, context: &str, env: &[(&str, &str)]) -> Output {
        let mut command = self.command(Path::new("kubectl"));
        command.arg("--kubeconfig").arg(config).args([
            "--context",
            context,
            "get",
            "--raw",
            "/api",
        ]);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().expect("kubectl runs")
    }

    /// Adds a variable to every process started from this sandbox.
    pub fn set_env(&mut self, name: &str, value: impl Into<OsString>) {
        self.extra_env.push((name.into(), value.into()));
    }

    /// A command for `program` with the sandbox's environment only.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        if self.socket_env {
            command.env("TOKEN_BROKER_SOCKET", &self.socket);
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
    }

    /// Starts brokerd with `args` and waits for its `ready` line.
    pub fn start_daemon(&self, args: &[&str]) -> Daemon {
        self.start_daemon_logging(args, "info")
    }

    /// Starts brokerd with `args` and RUST_LOG set to `filter`.
    pub fn start_daemon_logging(&self, args: &[&str], filter: &str) -> Daemon {
        let log = self.root().join(format!(
            "brokerd-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut child = self
            .command(&binaries().brokerd)
            .args(args)
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("brokerd starts");
        let stdout = line_channel(child.stdout.take().expect("stdout"));
        let log_lines = tee_to_file(child.stderr.take().expect("stderr"), &log);
        match stdout.recv_timeout(DEADLINE) {
            Ok(line) if line.starts_with("ready ") => Daemon {
                child,
                stdout,
                log,
                log_lines,
                socket: line["ready ".len()..].into(),
            },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "brokerd did not become ready ({other:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// Runs brokerctl to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command(&binaries().brokerctl)
            .args(args)
            .output()
            .expect("brokerctl runs")
    }

    /// Runs `broker-shim get-token <args>` as kubectl would, with `exec_info` in
    /// KUBERNETES_EXEC_INFO.
    pub fn shim(&self, args: &[&str], exec_info: Option<&str>) -> Output {
        let mut command = self.command(&binaries().shim);
        command.arg("get-token").args(args);
        if let Some(info) = exec_info {
            command.env("KUBERNETES_EXEC_INFO", info);
        }
        command.output().expect("broker-shim runs")
    }

    /// Starts `brokerctl login <args> --output json` and returns it with its event stream.
    pub fn start_login(&self, args: &[&str]) -> CtlRun {
        let mut all = vec!["login"];
        all.extend_from_slice(args);
        self.start_ctl(&all)
    }

    /// Starts `brokerctl <args> --output json`, which prints one JSON object per line, and
    /// returns it running.
    pub fn start_ctl(&self, args: &[&str]) -> CtlRun {
        let mut child = self
            .command(&binaries().brokerctl)
            .args(args)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("brokerctl starts");
        let events = line_channel(child.stdout.take().expect("stdout"));
        CtlRun { child, events }
    }

    /// Every regular file under the sandbox, for scanning.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(t) if t.is_file() => out.push(path),
                    _ => {}
                }
            }
        }
        out
    }

    /// Files under the sandbox that contain `needle`.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .filter(|path| {
                std::fs::read(path).is_ok_and(|bytes| {
                    bytes
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
                })
            })
            .collect()
    }
}

/// Reads lines from a pipe on a thread, so that waits can have deadlines.
fn line_channel(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running brokerd. Killed when dropped; [`Daemon::stop`] stops it the polite way.
pub struct Daemon {
    child: Child,
    /// Closes when brokerd exits: the signal that it has.
    stdout: Receiver<String>,
    log: PathBuf,
    /// brokerd's log lines as they are written.
    log_lines: Receiver<String>,
    socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        wait_for_exit(&mut self.child, &self.stdout, "brokerd")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` that brokerd writes from now on (lines written
    /// before are skipped as they are read).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "brokerd logged no line with {needle:?} within {} s; its log:\n{}",
                    DEADLINE.as_secs(),
                    self.log()
                ),
            }
        }
    }

    /// Discards the log lines written so far, so that [`Daemon::wait_for_log`] sees only new ones.
    pub fn skip_log(&self) {
        while self.log_lines.try_recv().is_ok() {}
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Moves brokerd's wall clock (it must run with `--test-clock`); returns brokerd's time.
    pub fn advance_clock(&self, seconds: i64) -> std::time::SystemTime {
        let socket = self.socket.clone();
        let now = block_on(async move {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("unix:{}", socket.display()))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("brokerd answers");
            broker_proto::v1::test_clock_client::TestClockClient::new(channel)
                .advance(broker_proto::v1::AdvanceClockRequest { seconds })
                .await
                .expect("brokerd runs with --test-clock")
                .into_inner()
                .now_unix
        });
        std::time::UNIX_EPOCH + Duration::from_secs(now as u64)
    }
}

/// Runs a future to completion on a fresh single-threaded runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Copies a pipe's lines to `file` and to a channel, on a thread.
fn tee_to_file(pipe: impl std::io::Read + Send + 'static, file: &Path) -> Receiver<String> {
    use std::io::Write;
    let mut file = std::fs::File::create(file).expect("log file");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            let _ = tx.send(line);
        }
    });
    rx
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child to exit: its stdout closing is the signal, bounded by [`DEADLINE`].
/// Lines still arriving are discarded.
pub fn wait_for_exit(
    child: &mut Child,
    stdout: &Receiver<String>,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match stdout.recv_timeout(left) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{what} did not exit within {} s", DEADLINE.as_secs());
            }
        }
    }
    child.wait().expect("wait")
}

/// `brokerctl login --output json`, running.
/// A running brokerctl that prints JSON lines (`login`, `status --watch`).
pub struct CtlRun {
    child: Child,
    events: Receiver<String>,
}

impl CtlRun {
    /// The next JSON event line.
    pub fn next_event(&mut self) -> Value {
        match self.events.recv_timeout(DEADLINE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("brokerctl printed a line that is not JSON ({e}): {line}")
            }),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no event from brokerctl within {} s", DEADLINE.as_secs())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let output = self.finish();
                panic!("brokerctl ended without another event: {output:?}")
            }
        }
    }

    /// Waits for brokerctl to exit; returns its status and stderr.
    pub fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let status = wait_for_exit(&mut self.child, &self.events, "brokerctl");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for CtlRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `KUBERNETES_EXEC_INFO` as kubectl sets it.
pub fn exec_info(api_version: &str, interactive: bool) -> String {
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": { "interactive": interactive },
    })
    .to_string()
}

/// stdout of a finished process as text, asserting it succeeded.
pub fn success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a finished process as text, asserting it failed with exit code 1.
pub fn failure(output: &Output, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what} should exit 1:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A mock Entra ID as tests want it: it asks clients to poll every second instead of Entra's
/// five, so device logins finish quickly.
pub fn fast_mock() -> MockEntra {
    MockEntra::start(MockConfig {
        device_code_interval: 1,
        ..MockConfig::default()
    })
}

/// The session flags for the AKS server in the test tenant, at `mock`.
pub fn session_args(mock: &MockEntra) -> Vec<String> {
    vec![
        "--server-id".into(),
        AKS_SERVER_ID.into(),
        "--tenant-id".into(),
        TENANT_ID.into(),
        "--authority-host".into(),
        mock.authority_host(),
    ]
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Signs in with the device code flow through `brokerctl login`, approving the code at the
/// mock as the user would; returns the `logged_in` event.
pub fn device_login(sandbox: &Sandbox, mock: &MockEntra) -> Value {
    let args = session_args(mock);
    let mut login = sandbox.start_login(&as_strs(&args));
    let code = login.next_event();
    assert_eq!(code["event"], "device_code", "{code}");
    let user_code = code["user_code"].as_str().expect("user_code");
    assert!(
        mock.approve(user_code),
        "the mock knows the code {user_code}"
    );
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    let (status, stderr) = login.finish();
    assert!(status.success(), "brokerctl login failed: {stderr}");
    done
}

/// The ExecCredential a successful shim run printed.
pub fn credential(output: &Output) -> Value {
    let stdout = success(output, "broker-shim");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Asserts that brokerd's log holds none of the tokens the mock issued.
pub fn assert_no_tokens_in(text: &str, mock: &MockEntra, what: &str) {
    for token in mock
        .issued_refresh_tokens()
        .iter()
        .chain(mock.issued_access_tokens().iter())
    {
        assert!(!text.contains(token.as_str()), "{what} contains a token");
        // A JWT's signature part alone is still the secret part.
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!text.contains(signature), "{what} contains part of a token");
        }
    }
}

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

/// A kubeconfig user that runs broker-shim.
pub struct KubeUser {
    pub name: String,
    pub api_version: &'static str,
    pub args: Vec<String>,
}

impl KubeUser {
    pub fn new(name: &str, args: Vec<String>) -> Self {
        KubeUser {
            name: name.into(),
            api_version: EXEC_V1,
            args,
        }
    }
}

/// A client certificate for a service principal: an RSA key and a self-signed certificate, as
/// PEM and as a password-protected PFX, plus what the mock registers for it.
pub struct ClientCert {
    pub pem: PathBuf,
    pub pfx: PathBuf,
    pub pfx_password: String,
    /// base64url SHA-256 of the certificate's DER: what `x5t#S256` carries.
    pub thumbprint: String,
    /// The public key as PKCS#1 DER, for the mock to verify assertions with.
    pub public_key: Vec<u8>,
    /// The private key as PKCS#8 DER, for tests that sign assertions by hand.
    pub private_key: Vec<u8>,
}

impl ClientCert {
    pub fn generate(dir: &Path, name: &str) -> Self {
        use base64::Engine;
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::EncodePrivateKey;
        let key = <rsa::PrivateKey as rsa::Generate>::generate();
        let pkcs8 = key.to_pkcs8_der().expect("PKCS#8");
        let public_key = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1")
            .as_bytes()
            .to_vec();
        let pkcs8_der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
        let signer =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der, &rcgen::PKCS_RSA_SHA256)
                .expect("rcgen takes the RSA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{name} service principal"),
        );
        let cert = params.self_signed(&signer).expect("certificate");
        let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, cert.der()).as_ref());

        let pem = dir.join(format!("{name}.pem"));
        let key_pem = signer.serialize_pem();
        std::fs::write(&pem, format!("{}{key_pem}", cert.pem())).expect("PEM");

        let pfx_password = "pfx password 123".to_string();
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(
            b"1".to_vec(),
            p12_keystore::PrivateKey::from_der(pkcs8.as_bytes()).expect("key"),
            [p12_keystore::Certificate::from_der(cert.der()).expect("cert")],
        );
        store.add_entry("sp", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = dir.join(format!("{name}.pfx"));
        std::fs::write(&pfx, store.writer(&pfx_password).write().expect("PFX")).expect("write");
        ClientCert {
            pem,
            pfx,
            pfx_password,
            thumbprint,
            public_key,
            private_key: pkcs8.as_bytes().to_vec(),
        }
    }
}

/// The reason brokerd gives for refusing a GetToken, asked over gRPC as broker-shim asks.
pub fn get_token_reason(
    sandbox: &Sandbox,
    spec: broker_proto::v1::SessionSpec,
    credentials: broker_proto::v1::Credentials,
) -> Result<String, (broker_proto::v1::ErrorReason, String)> {
    let socket = sandbox.socket.clone();
    block_on(async move {
        let mut client = broker_proto::connect(&socket)
            .await
            .expect("brokerd answers");
        match client
            .get_token(broker_proto::v1::GetTokenRequest {
                spec: Some(spec),
                credentials: Some(credentials),
            })
            .await
        {
            Ok(answer) => Ok(answer.into_inner().session_id),
            Err(status) => Err((
                broker_proto::error_reason(&status),
                broker_proto::error_message(&status),
            )),
        }
    })
}
