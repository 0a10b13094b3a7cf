//! brokerd's life: started on demand by its clients (one daemon however many race), under a
//! service manager (an inherited socket, readiness and stopping notices), and stopped cleanly.

use std::path::Path;
use std::time::{Duration, Instant};

use broker_tests::harness::{
    EXEC_V1, Sandbox, binaries, credential, exec_info, failure, fast_mock, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, App, MockEntra, TENANT_ID};

const APP: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const SECRET: &str = "spn-secret-Value~7Q8s.6tZa1!";

/// A service principal: every shim brings its secret, so no login is needed first.
fn spn_mock() -> MockEntra {
    let mock = fast_mock();
    mock.register_app(
        APP,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    mock
}

fn spn_args(mock: &MockEntra) -> Vec<String> {
    [
        "get-token",
        "--login",
        "spn",
        "--client-id",
        APP,
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--authority-host",
        &mock.authority_host(),
    ]
    .map(String::from)
    .to_vec()
}

/// Every brokerd process whose command line names `socket`.
fn brokerds_for(socket: &Path) -> Vec<u32> {
    let socket = socket.to_string_lossy().into_owned();
    let brokerd = binaries().brokerd.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let args: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.first().is_some_and(|a| *a == brokerd) && args.contains(&socket)
            })
        })
        .collect()
}

/// Processes that are not our children cannot be waited for: look until `done` holds, within
/// a deadline.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn twenty_shims_with_no_daemon_start_exactly_one() {
    let mock = spn_mock();
    let sandbox = Sandbox::new();
    assert!(sandbox.serving_pid().is_none());
    let args = spn_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let shims: Vec<_> = (0..20)
        .map(|_| {
            sandbox
                .command(&binaries().shim)
                .args(&args)
                .env("KUBERNETES_EXEC_INFO", &info)
                .env("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", SECRET)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("broker-shim starts")
        })
        .collect();
    // `wait_with_output` reads to the end: a brokerd that kept a shim's pipes would hang it.
    for shim in shims {
        let out = shim.wait_with_output().unwrap();
        let cred = credential(&out);
        mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
            .expect("a token the mock signed");
    }
    let serving = sandbox.serving_pid().expect("a brokerd serves");
    eventually("the brokerds that lost the race exit", || {
        brokerds_for(&sandbox.socket) == vec![serving]
    });
    assert_eq!(
        mock.requests("client_credentials"),
        1,
        "one daemon, one grant"
    );

    // It logs to its state directory, having no terminal.
    let log = std::fs::read_to_string(sandbox.state_dir.join("brokerd.log")).unwrap();
    assert!(log.contains("started on demand"), "{log}");
    assert!(!log.contains(SECRET));
}

#[test]
fn brokerctl_starts_brokerd_too_and_doctor_does_not() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let out = sandbox.ctl(&["doctor", "--authority-host", &mock.authority_host()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        sandbox.serving_pid().is_none(),
        "doctor reports, it does not start"
    );
    let status = success(&sandbox.ctl(&["status"]), "status");
    assert!(status.contains("No sessions yet"), "{status}");
    assert!(sandbox.serving_pid().is_some());
}

#[test]
fn start_on_demand_can_be_turned_off() {
    let mock = spn_mock();
    let sandbox = Sandbox::new();
    let config = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "start_on_demand = false\n").unwrap();
    let out = sandbox
        .command(&binaries().shim)
        .args(spn_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
        .output()
        .unwrap();
    let err = failure(&out, "shim with start on demand off");
    assert!(
        err.starts_with("broker-shim: brokerd is not running (no answer on"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "start on demand is turned off (start_on_demand = false in {})",
            config.display()
        )),
        "{err}"
    );
    assert!(err.contains("brokerctl service install"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = failure(&sandbox.ctl(&["status"]), "brokerctl status");
    assert!(
        err.starts_with("brokerctl: brokerd is not running"),
        "{err}"
    );
    assert!(brokerds_for(&sandbox.socket).is_empty());
}

#[test]
fn a_brokerd_that_cannot_start_says_why_through_the_shim() {
    let mock = spn_mock();
    let sandbox = Sandbox::new();
    let config = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[refresh]\njitter = 7\n").unwrap();
    let out = sandbox
        .command(&binaries().shim)
        .args(spn_args(&mock))
        .output()
        .unwrap();
    let err = failure(&out, "shim with a broken configuration");
    assert!(err.contains("could not be started"), "{err}");
    assert!(
        err.contains("refresh.jitter must be between 0 and 0.5"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn under_socket_activation_brokerd_serves_the_socket_it_is_passed() {
    if !broker_tests::harness::require(
        "systemd-socket-activate (package systemd)",
        broker_tests::harness::on_path("systemd-socket-activate"),
    ) {
        return;
    }
    use std::io::BufRead;
    let mock = spn_mock();
    let sandbox = Sandbox::new();
    let dir = sandbox.socket.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // As the .socket unit would have it: SocketMode=0600 (here: umask 077).
    let mut manager = sandbox
        .command(Path::new("sh"))
        .arg("-c")
        .arg(format!(
            "umask 077; exec systemd-socket-activate --listen={} -E XDG_CONFIG_HOME={} {} --store memory",
            sandbox.socket.display(),
            sandbox.home.join(".config").display(),
            binaries().brokerd.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(manager.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("Listening on"), "{line}");

    // The first connection starts brokerd on the socket the manager holds.
    let out = sandbox
        .command(&binaries().shim)
        .args(spn_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
        .env("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", SECRET)
        .output()
        .unwrap();
    let cred = credential(&out);
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token through the inherited socket");
    let mut ready = String::new();
    std::io::BufReader::new(manager.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), format!("ready {}", sandbox.socket.display()));
    let serving = sandbox.serving_pid().expect("brokerd serves");
    assert_eq!(
        serving,
        manager.id(),
        "systemd-socket-activate became brokerd"
    );

    // Stopped, it leaves the socket file to the manager that made it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(serving as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(manager.wait().unwrap().success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(log.contains("passed by the service manager"), "{log}");
    assert!(sandbox.socket.exists(), "the inherited socket file stays");
}

#[test]
fn brokerd_tells_the_service_manager_when_it_is_ready_and_when_it_stops() {
    let mut sandbox = Sandbox::new();
    let path = sandbox.root().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sandbox.set_env("NOTIFY_SOCKET", &path);
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1\n");
    let stopped = daemon.stop();
    assert!(stopped.success(), "{stopped}: {}", daemon.log());
    let n = notify.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(
        !sandbox.socket.exists(),
        "a socket brokerd bound itself is removed"
    );
}

#[test]
fn a_stop_lets_calls_in_flight_finish_then_removes_the_socket() {
    let mock = spn_mock();
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    // The IdP takes its time: the shim's GetToken is still in flight when brokerd is told to
    // stop (with SIGINT here; SIGTERM is the same path).
    mock.set_delay(Some(Duration::from_secs(2)));
    let shim = sandbox
        .command(&binaries().shim)
        .args(spn_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
        .env("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        mock.wait_for_requests("client_credentials", 1, Duration::from_secs(20)),
        "the request reaches the IdP"
    );
    daemon.signal(rustix::process::Signal::INT);
    let cred = credential(&shim.wait_with_output().unwrap());
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("the call in flight got its token");
    assert!(daemon.stop().success());
    assert!(daemon.log().contains("shutting down"));
    assert!(!sandbox.socket.exists());
}
