//! brokerd as a process: its socket, its refusals, its status, its bad-input answers.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, binaries, device_login, exec_info, failure, fast_mock, is_root,
    require, session_args, success,
};
use serde_json::Value;

#[test]
fn a_second_daemon_on_the_same_socket_exits_with_a_clear_message() {
    let sandbox = Sandbox::new();
    let _first = sandbox.start_daemon(&["--store", "memory"]);
    let second = sandbox
        .command(&binaries().brokerd)
        .args(["--store", "memory"])
        .output()
        .unwrap();
    let err = failure(&second, "second brokerd");
    assert!(err.contains("another brokerd already serves"), "{err}");
    // The first one is untouched.
    success(&sandbox.ctl(&["status"]), "status");
}

#[test]
fn a_stale_socket_is_replaced_and_an_orderly_stop_removes_it() {
    let sandbox = Sandbox::new();
    let crashed = sandbox.start_daemon(&["--store", "memory"]);
    drop(crashed); // SIGKILL: the socket file stays behind.
    assert!(sandbox.socket.exists());
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    success(&sandbox.ctl(&["status"]), "status");
    assert!(daemon.stop().success());
    assert!(!sandbox.socket.exists(), "SIGTERM removes the socket");
}

#[test]
fn the_socket_is_private_and_an_open_directory_is_refused() {
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    let dir = sandbox.socket.parent().unwrap();
    assert_eq!(dir.metadata().unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(
        sandbox.socket.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    daemon.stop();

    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sandbox
        .command(&binaries().brokerd)
        .args(["--store", "memory"])
        .output()
        .unwrap();
    let err = failure(&out, "brokerd with an open socket directory");
    assert!(err.contains("mode 0755"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
}

#[test]
fn by_default_everyone_meets_in_the_xdg_runtime_dir() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    sandbox.without_socket_env();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    assert!(sandbox.socket.starts_with(&sandbox.runtime_dir));
    assert!(sandbox.socket.exists());
    device_login(&sandbox, &mock);
    let out = sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    );
    success(&out, "shim on the default socket");
}

#[test]
fn the_socket_flag_overrides_the_environment() {
    let sandbox = Sandbox::new();
    let other = sandbox.root().join("elsewhere/broker.sock");
    let _daemon = sandbox.start_daemon(&["--store", "memory", "--socket", other.to_str().unwrap()]);
    assert!(other.exists());
    assert!(!sandbox.socket.exists());
    let out = sandbox
        .command(&binaries().brokerctl)
        .args(["--socket", other.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    success(&out, "status on --socket");
}

#[test]
fn status_json_has_the_documented_shape() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);
    let st: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["pid"], daemon.pid());
    assert_eq!(st["socket"], sandbox.socket.to_str().unwrap());
    assert_eq!(st["secret_store"], "memory");
    assert!(st["uptime_seconds"].is_u64());
    let s = &st["sessions"][0];
    for key in [
        "id",
        "account",
        "authority",
        "environment",
        "tenant_id",
        "client_id",
        "server_id",
        "login_mode",
        "state",
        "token_expires_at",
        "last_refresh_at",
        "last_error",
    ] {
        assert!(s.get(key).is_some(), "session field {key} missing: {s}");
    }
    assert_eq!(s["authority"], mock.base_url());
    assert_eq!(s["login_mode"], "devicecode");
    assert_eq!(s["state"], "fresh");

    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(text.contains("alice@contoso.example"), "{text}");
    assert!(text.contains("fresh"), "{text}");
}

#[test]
fn bad_input_gets_one_line_and_exit_1() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let info = exec_info(EXEC_V1, false);
    let host = mock.authority_host();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tenant-id", "t.example"], "--server-id is required"),
        (
            vec![
                "--server-id",
                "s",
                "--tenant-id",
                "t.example",
                "--login",
                "magic",
            ],
            "is not supported",
        ),
        (
            vec![
                "--server-id",
                "s",
                "--tenant-id",
                "t.example",
                "--login",
                "spn",
            ],
            "--client-id is required with --login spn",
        ),
        (
            vec![
                "--server-id",
                "s",
                "--tenant-id",
                "t.example",
                "--login",
                "spn",
                "--client-id",
                "app",
            ],
            "no client secret or certificate for service principal app",
        ),
        (
            vec!["--server-id", "s", "--tenant-id", "t.example", "--bogus"],
            "unknown or unsupported flag --bogus",
        ),
        (
            vec!["--server-id", "s", "--tenant-id", "t.example", "-e", "Mars"],
            "unknown environment \"Mars\"",
        ),
        (
            vec![
                "--server-id",
                "s",
                "--tenant-id",
                "t.example",
                "--authority-host",
                "http://login.example/",
            ],
            "must use https",
        ),
        (
            vec![
                "--server-id",
                "s",
                "--tenant-id",
                "a/b",
                "--authority-host",
                &host,
            ],
            "--tenant-id \"a/b\" is not valid",
        ),
        (
            vec!["--server-id", "s", "--tenant-id", "mytenant"],
            "--tenant-id \"mytenant\" is not valid: a tenant is a GUID, a domain name",
        ),
    ];
    for (args, expected) in cases {
        let err = failure(&sandbox.shim(&args, Some(&info)), &format!("shim {args:?}"));
        assert!(err.starts_with("broker-shim: "), "{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = failure(
        &sandbox.shim(&as_strs(&session_args(&mock)), Some("{not json")),
        "shim with bad exec info",
    );
    assert!(
        err.contains("KUBERNETES_EXEC_INFO is not valid JSON"),
        "{err}"
    );

    let err = failure(
        &sandbox.ctl(&[
            "login",
            "--server-id",
            "s",
            "--tenant-id",
            "t",
            "--login",
            "magic",
        ]),
        "brokerctl login",
    );
    assert!(err.contains("--login \"magic\" is not supported"), "{err}");
    // The daemon shrugs all of that off.
    success(&sandbox.ctl(&["status"]), "status");
}

/// Nobody is asked to sign in for a refresh token that could not be kept: the store is tried
/// first, and the answer names it and the way out.
#[test]
fn an_unreachable_keyring_is_a_clear_error_naming_the_backend_before_any_prompt() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    // No session bus anywhere: the Secret Service cannot be reached.
    sandbox.set_env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", sandbox.root().join("no-bus").display()),
    );
    let _daemon = sandbox.start_daemon(&["--store", "secret-service"]);
    let args = session_args(&mock);
    let mut login = sandbox.start_login(&as_strs(&args));
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    assert_eq!(failed["reason"], "STORE_UNAVAILABLE");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot sign in: Secret Service"),
        "{message}"
    );
    assert!(message.contains("--store memory"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(login.finish().0.code(), Some(1));
    assert_eq!(mock.requests("devicecode"), 0, "no device code was shown");
    // Still serving, and saying what it found of the store.
    let st: serde_json::Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(st["secret_store"], "Secret Service");
    assert!(st["secret_store_problem"].is_string(), "{st}");
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(
        text.contains("secret store: Secret Service — NOT usable now"),
        "{text}"
    );
}

/// A process of another user reaches the socket (the directory and socket were opened up by
/// mistake): its shim refuses a socket that is not its user's before sending anything.
#[test]
fn a_caller_with_another_uid_is_refused() {
    if !require("root (to run a client as `nobody`)", is_root())
        || !require("setpriv", broker_tests::harness::on_path("setpriv"))
    {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    // Open the way for `nobody`: every directory from the sandbox down to the socket (the
    // temp dir above it is world-traversable), and the socket itself.
    let mut dir = sandbox.socket.parent().unwrap().to_path_buf();
    loop {
        let mode = dir.metadata().unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        if dir == sandbox.root() || !dir.pop() {
            break;
        }
    }
    std::fs::set_permissions(&sandbox.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The shim binary, where `nobody` can run it.
    let shim = sandbox.root().join("broker-shim");
    std::fs::copy(&binaries().shim, &shim).unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();

    let output = sandbox
        .command(std::path::Path::new("setpriv"))
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&shim)
        .arg("get-token")
        .args(session_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // The shim sees that the socket is another user's before it sends anything (brokerd's
    // own refusal of such a caller is in hostile.rs).
    let err = failure(&output, "shim as nobody");
    assert!(err.contains("refusing to talk to"), "{err}");
    assert!(err.contains("belongs to uid 0, not to uid 65534"), "{err}");
}

/// A client newer than the daemon asks for something the daemon does not know: the answer
/// says so plainly, naming both versions, instead of a bare "unimplemented".
#[test]
fn a_newer_client_is_told_plainly_that_brokerd_is_older() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let status = broker_tests::harness::block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix:{}", sandbox.socket.display()))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<
            broker_proto::v1::StatusRequest,
            broker_proto::v1::StatusRequest,
        >::default();
        grpc.unary(
            tonic::Request::new(broker_proto::v1::StatusRequest {}),
            "/tokenbroker.v1.Broker/SomethingFromTheFuture"
                .parse()
                .unwrap(),
            codec,
        )
        .await
        .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let message = broker_proto::error_message(&status);
    let version = env!("CARGO_PKG_VERSION");
    let protocol = broker_proto::PROTOCOL_VERSION;
    assert_eq!(
        message,
        format!(
            "brokerd {version} (protocol {protocol}) is older than this client ({version}, \
             protocol {protocol}) and does not know what it asked; restart brokerd so that it \
             runs the installed version"
        )
    );
}
