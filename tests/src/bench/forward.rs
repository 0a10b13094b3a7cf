//! A token through a forwarded broker, beside the local socket and beside what ssh's own
//! forwarding of a trivial exchange costs, and brokerd's cold start on demand beside one round
//! trip to the identity provider.
//!
//! Forwarding: an `ssh -R` session (real OpenSSH on loopback, the second user as the remote
//! side) carries forward.sock, and a trivial echo socket, onto the remote user's socket
//! directory. Four candidates take turns round by round: the shim on the local socket, the shim
//! as the remote user on the forwarded one, and a one-byte echo client (this binary, started
//! with `--echo-client`) on a local echo socket and on its forwarded twin. The shim's extra time
//! through the forward is judged against the echo's extra time through the same forward.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{Candidate, compare};
use super::{Row, Scale, ms};
use crate::harness::ssh::{REMOTE_USER, Sshd, remote_socket_dir, remote_uid};
use crate::harness::{Sandbox, binaries, exec_info, on_path, session_args};
use crate::mock_entra::MockEntra;

const NAME: &str = "GetToken through forward.sock over ssh: shim's extra time ÷ ssh's own";

/// The hidden mode of broker-bench that the echo candidates run: connect, send one byte, read
/// it back.
pub fn echo_client(path: &Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(b"x")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    Ok(())
}

/// Answers every connection's bytes with themselves, until the process ends.
fn echo_server(path: &Path) -> std::io::Result<()> {
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = [0u8; 64];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// The `ssh -R … -R …` session, ended with the benchmark.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn not_measured(why: &str) -> Row {
    Row::new(
        NAME,
        "not measured".into(),
        "≤ 1 ssh round trip + 0.5 ms",
        why.into(),
        None,
    )
}

/// `command` run as the remote user (what a process on the SSH host is).
fn as_remote_user(program: &Path, uid: u32) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program)
        .env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

pub fn through_ssh(sandbox: &Sandbox, mock: &MockEntra, scale: Scale) -> Row {
    if !Sshd::available() || !on_path("setpriv") {
        return not_measured("needs root, OpenSSH, setpriv and the user tb-remote");
    }
    let (Some(uid), Some(remote_dir)) = (remote_uid(), remote_socket_dir()) else {
        return not_measured("no user tb-remote");
    };
    let sshd = Sshd::start();
    let status = sandbox.ctl(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let (Some(forward_socket), Some(session)) = (
        status["forward_socket"].as_str(),
        status["sessions"][0]["id"].as_str(),
    ) else {
        return not_measured("brokerd serves no forwarding socket, or no session");
    };
    let allowed = sandbox.ctl(&["forward", "allow", session]);
    assert!(allowed.status.success(), "forward allow");

    // The remote side's socket directory, as `brokerctl forward ssh` makes it.
    let _ = std::fs::remove_dir_all(&remote_dir);
    std::fs::create_dir_all(&remote_dir).expect("remote dir");
    let chown = Command::new("chown")
        .arg(format!("{uid}:{uid}"))
        .arg(&remote_dir)
        .status()
        .expect("chown");
    assert!(chown.success());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&remote_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }
    let local_echo = sandbox.root().join("echo.sock");
    echo_server(&local_echo).expect("echo server");
    let remote_broker = remote_dir.join("broker.sock");
    let remote_echo = remote_dir.join("echo.sock");
    // A session, as `brokerctl forward ssh` opens: OpenSSH turns Nagle's algorithm off for
    // the connection when a session starts, not for `ssh -N`, whose forwards then wait up to
    // 40 ms for delayed ACKs on every exchange.
    let forward = Forward(
        Command::new("ssh")
            .args(sshd.options())
            .args(["-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{}:{forward_socket}", remote_broker.display()))
            .arg("-R")
            .arg(format!(
                "{}:{}",
                remote_echo.display(),
                local_echo.display()
            ))
            .arg(sshd.destination())
            .args(["--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("ssh starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(remote_broker.exists() && remote_echo.exists()) {
        assert!(Instant::now() < deadline, "the forwards did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Local candidates run the build's binaries; remote ones copies the remote user can reach.
    let shim = binaries().shim.clone();
    let remote_shim = sshd.install_remote(&shim);
    // The build step above may have replaced this very executable: run the file there now.
    let me = shim.with_file_name("broker-bench");
    let remote_me = sshd.install_remote(&me);
    let args: Vec<String> = std::iter::once("get-token".to_string())
        .chain(session_args(mock))
        .collect();
    let info = exec_info("client.authentication.k8s.io/v1", false);
    let home = sandbox.home.clone();
    let local_socket = sandbox.socket.clone();
    let shim_on = |socket: PathBuf, remote: bool| -> Box<dyn Fn() -> Command> {
        let (shim, remote_shim) = (shim.clone(), remote_shim.clone());
        let (args, info, home) = (args.clone(), info.clone(), home.clone());
        Box::new(move || {
            let mut command = if remote {
                let mut c = as_remote_user(&remote_shim, uid);
                c.env("HOME", format!("/home/{REMOTE_USER}"));
                c
            } else {
                let mut c = Command::new(&shim);
                c.env_clear().env("HOME", &home);
                c
            };
            command
                .args(&args)
                .env("TOKEN_BROKER_SOCKET", &socket)
                .env("KUBERNETES_EXEC_INFO", &info);
            command
        })
    };
    let echo_on = |socket: PathBuf, remote: bool| -> Box<dyn Fn() -> Command> {
        let (me, remote_me) = (me.clone(), remote_me.clone());
        Box::new(move || {
            let mut command = if remote {
                as_remote_user(&remote_me, uid)
            } else {
                let mut c = Command::new(&me);
                c.env_clear();
                c
            };
            command.arg("--echo-client").arg(&socket);
            command
        })
    };
    let candidates = vec![
        Candidate {
            name: "shim, local socket".into(),
            command: shim_on(local_socket, false),
        },
        Candidate {
            name: "shim, forwarded".into(),
            command: shim_on(remote_broker, true),
        },
        Candidate {
            name: "echo, local socket".into(),
            command: echo_on(local_echo, false),
        },
        Candidate {
            name: "echo, forwarded".into(),
            command: echo_on(remote_echo, true),
        },
    ];
    let rounds = scale.pick(300, 40);
    let samples = compare(&candidates, 5, rounds);
    drop(forward);
    let median = |i: usize| samples[i].median();
    let shim_extra = median(1).saturating_sub(median(0));
    let ssh_extra = median(3).saturating_sub(median(2));
    let allowance = ssh_extra + Duration::from_micros(500);
    Row::new(
        NAME,
        format!("+{} (ssh's own +{})", ms(shim_extra), ms(ssh_extra)),
        "≤ 1 ssh round trip + 0.5 ms",
        format!(
            "shim {} local, {} forwarded; echo {} local, {} forwarded ({rounds} rounds)",
            ms(median(0)),
            ms(median(1)),
            ms(median(2)),
            ms(median(3))
        ),
        Some(shim_extra <= allowance),
    )
}

const COLD: &str =
    "cold start on demand: no brokerd, token in the kernel keyring, to ExecCredential";

/// An app the mock knows, for one bare round trip to the token endpoint.
const APP: &str = "cccccccc-0000-0000-0000-00000000000c";
const SECRET: &str = "bench-secret";

/// One client-credentials request to the mock's token endpoint, over plain HTTP/1.1 on a new
/// connection, as a refresh is: what one IdP round trip costs here (the mock signs a JWT either
/// way).
fn idp_round_trip(mock: &MockEntra) -> Duration {
    let url = url::Url::parse(mock.base_url()).expect("the mock's URL");
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(80)
    );
    let body = format!(
        "grant_type=client_credentials&client_id={APP}&client_secret={SECRET}&scope={}%2F.default",
        crate::mock_entra::AKS_SERVER_ID
    );
    let request = format!(
        "POST /{}/oauth2/v2.0/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::mock_entra::TENANT_ID,
        body.len()
    );
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(&host).expect("the mock answers");
    stream.write_all(request.as_bytes()).expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    took
}

/// The shim with no brokerd running: it starts one, which reads the session index and the
/// refresh token from the kernel keyring and redeems it. Each round ends by stopping brokerd.
pub fn cold_start(scale: Scale) -> Row {
    let not_measured = |why: &str| {
        Row::new(
            COLD,
            "not measured".into(),
            "≤ 20 ms + 1 IdP round trip",
            why.into(),
            None,
        )
    };
    let keyring = Command::new("keyctl")
        .args(["get_persistent", "@u"])
        .output();
    if !keyring.is_ok_and(|o| o.status.success()) {
        return not_measured("needs the kernel keyring and keyctl (package keyutils)");
    }
    let mock = MockEntra::start(crate::mock_entra::MockConfig {
        auto_approve: true,
        device_code_interval: 1,
        ..Default::default()
    });
    mock.register_app(
        APP,
        crate::mock_entra::App {
            secret: Some(SECRET.into()),
            ..Default::default()
        },
    );
    let mut sandbox = Sandbox::new();
    sandbox.set_env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", sandbox.root().join("no-bus").display()),
    );
    let mut daemon = sandbox.start_daemon_logging(&["--store", "kernel-keyring"], "warn");
    let mut login = vec!["login".to_string()];
    login.extend(session_args(&mock));
    let login: Vec<&str> = login.iter().map(String::as_str).collect();
    let signed_in = sandbox.ctl(&login);
    assert!(signed_in.status.success(), "login");
    assert!(daemon.stop().success());

    let args: Vec<String> = std::iter::once("get-token".to_string())
        .chain(session_args(&mock))
        .collect();
    let info = exec_info("client.authentication.k8s.io/v1", false);
    let rounds = scale.pick(30, 5);
    let mut starts = Vec::with_capacity(rounds);
    let mut trips = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        trips.push(idp_round_trip(&mock));
        let mut shim = sandbox.command(&binaries().shim);
        shim.args(&args).env("KUBERNETES_EXEC_INFO", &info);
        starts.push(super::process::time_once(&mut shim));
        stop_serving(&sandbox);
    }
    starts.sort_unstable();
    trips.sort_unstable();
    let start = starts[starts.len() / 2];
    let trip = trips[trips.len() / 2];
    let over = start.saturating_sub(trip);
    Row::new(
        COLD,
        format!("{} ({} beyond the IdP round trip)", ms(start), ms(over)),
        "≤ 20 ms + 1 IdP round trip",
        format!("IdP round trip {} ({rounds} rounds, medians)", ms(trip)),
        Some(over <= Duration::from_millis(20)),
    )
}

/// Stops the brokerd serving the sandbox's socket and waits until it is gone.
fn stop_serving(sandbox: &Sandbox) {
    let Some(pid) = sandbox.serving_pid() else {
        return;
    };
    let Some(process) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
