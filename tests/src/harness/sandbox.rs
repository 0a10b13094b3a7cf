//! The sandbox every end-to-end test runs in: a temporary HOME with private XDG directories,
//! a socket path, and only that environment (plus PATH) for the processes it starts.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::process::{CtlRun, Daemon, line_channel, tee_to_file};
use super::{DEADLINE, EXEC_V1, binaries, block_on};

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
    runtime_dir_env: bool,
    /// brokerd runs with keyctl blocked, as in a container (Linux).
    pub without_keyctl: bool,
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
            runtime_dir_env: true,
            without_keyctl: false,
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

    /// As on a machine without a login session's runtime directory (no pam_systemd, macOS):
    /// neither XDG_RUNTIME_DIR nor TOKEN_BROKER_SOCKET is set, and TMPDIR is `tmp`, a sticky,
    /// world-writable directory like /tmp, so the socket's default place is
    /// `tmp/token-broker-<uid>/broker.sock`. Returns that path.
    pub fn without_runtime_dir(&mut self) -> PathBuf {
        self.socket_env = false;
        self.runtime_dir_env = false;
        let tmp = self.root().join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        self.set_env("TMPDIR", &tmp);
        let uid = rustix::process::getuid().as_raw();
        self.socket = tmp.join(format!("token-broker-{uid}/broker.sock"));
        self.socket.clone()
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
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        if self.runtime_dir_env {
            command.env("XDG_RUNTIME_DIR", &self.runtime_dir);
        }
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
        self.start_daemon_binary(&binaries().brokerd, args, filter)
    }

    /// Starts the brokerd at `brokerd` (another build's, for a benchmark's baseline) with
    /// `args` and RUST_LOG set to `filter`.
    pub fn start_daemon_binary(&self, brokerd: &Path, args: &[&str], filter: &str) -> Daemon {
        let log = self.root().join(format!(
            "brokerd-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut command = self.command(brokerd);
        #[cfg(target_os = "linux")]
        if self.without_keyctl {
            super::seccomp::without_keyctl(&mut command);
        }
        let mut child = command
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
        files_under(self.root())
    }

    /// Files under the sandbox that contain `needle`.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        files_containing(self.root(), needle)
    }
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
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

/// Files under `dir` that contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
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
