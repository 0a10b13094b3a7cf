//! Hostile input against a real brokerd: garbage and wrong protocols on its socket, oversized
//! calls, connection floods, broken IdP answers and callers of another uid. After each, the
//! daemon still serves a well-behaved client and the stored session still refreshes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use broker_proto::v1::{self, GetTokenRequest, SessionSpec};
use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, block_on, credential, device_login, exec_info, failure, fast_mock,
    on_path, require, session_args, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, Fault, MockEntra, TENANT_ID};

/// brokerd still answers the shim with a token the mock signed, and the session's refresh token
/// still works.
fn still_serves(sandbox: &Sandbox, mock: &MockEntra, session: &str) {
    let output = sandbox.shim(
        &as_strs(&session_args(mock)),
        Some(&exec_info(EXEC_V1, false)),
    );
    let token = credential(&output)["status"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    mock.verify(&token, AKS_SERVER_ID)
        .expect("a token the mock signed");
    success(
        &sandbox.ctl(&["refresh", session]),
        "refresh after the attack",
    );
}

fn logged_in(mock: &MockEntra) -> (Sandbox, broker_tests::harness::Daemon, String) {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let session = device_login(&sandbox, mock)["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    (sandbox, daemon, session)
}

/// Sends `bytes` on a fresh connection and returns whatever comes back before brokerd closes it.
fn send_raw(sandbox: &Sandbox, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(&sandbox.socket).expect("brokerd listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).expect("brokerd reads");
    let mut answer = Vec::new();
    // brokerd closes the connection, or resets it when it leaves bytes unread; a timeout here
    // would mean it kept a broken connection open.
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("brokerd did not close the connection: {e}"),
    }
    answer
}

#[test]
fn garbage_and_plain_http1_on_the_socket_close_only_that_connection() {
    let mock = fast_mock();
    let (sandbox, _daemon, session) = logged_in(&mock);

    let mut garbage = vec![0u8; 4096];
    for (i, byte) in garbage.iter_mut().enumerate() {
        *byte = (i * 7919 % 251) as u8;
    }
    send_raw(&sandbox, &garbage);
    let answer = send_raw(
        &sandbox,
        b"GET /tokenbroker.v1.Broker/Status HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    // Whatever it says, it is not a token: an HTTP/1 client gets no service.
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("eyJ"), "{answer}");
    // An HTTP/2 preface followed by a frame that is not one.
    let mut broken = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    broken.extend_from_slice(&[0xff; 64]);
    send_raw(&sandbox, &broken);

    still_serves(&sandbox, &mock, &session);
}

#[test]
fn an_oversized_call_is_refused_and_the_daemon_serves_on() {
    let mock = fast_mock();
    let (sandbox, _daemon, session) = logged_in(&mock);
    let socket = sandbox.socket.clone();
    let host = mock.authority_host();
    let refused = block_on(async move {
        let mut client = broker_proto::connect(&socket).await.expect("brokerd");
        client
            .get_token(GetTokenRequest {
                spec: Some(SessionSpec {
                    server_id: AKS_SERVER_ID.into(),
                    tenant_id: TENANT_ID.into(),
                    authority_host: host,
                    ..Default::default()
                }),
                credentials: Some(v1::Credentials {
                    client_secret: "x".repeat(1024 * 1024),
                    ..Default::default()
                }),
                interactive: false,
            })
            .await
            .expect_err("a 1 MiB request is refused")
    });
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("message length too large"),
        "{refused:?}"
    );
    still_serves(&sandbox, &mock, &session);
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_connections_opened_and_dropped_leak_nothing() {
    let mock = fast_mock();
    let (sandbox, daemon, session) = logged_in(&mock);
    let before = open_descriptors(daemon.pid());
    for _round in 0..20 {
        let batch: Vec<UnixStream> = (0..500)
            .map(|_| UnixStream::connect(&sandbox.socket).expect("brokerd accepts"))
            .collect();
        drop(batch);
    }
    still_serves(&sandbox, &mock, &session);
    // Closed connections are noticed asynchronously; give brokerd a moment to let go of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = open_descriptors(daemon.pid());
    while after > before + 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = open_descriptors(daemon.pid());
    }
    assert!(
        after <= before + 4,
        "brokerd held {before} descriptors before and {after} after"
    );
}

#[test]
fn malformed_and_oversized_idp_answers_fail_one_refresh_and_lose_nothing() {
    let mock = fast_mock();
    let (sandbox, _daemon, session) = logged_in(&mock);

    mock.inject(Fault::Malformed, 1);
    let malformed = failure(&sandbox.ctl(&["refresh", &session]), "malformed answer");
    assert_eq!(malformed.lines().count(), 1, "{malformed}");
    assert!(!malformed.contains("unterminated"), "{malformed}");

    mock.inject(Fault::Oversized, 1);
    let oversized = failure(&sandbox.ctl(&["refresh", &session]), "oversized answer");
    assert!(oversized.contains("larger than"), "{oversized}");

    // The refresh token survived both: the next refresh works.
    still_serves(&sandbox, &mock, &session);
}

#[test]
fn a_caller_of_another_uid_is_refused_and_others_are_served() {
    if !require(
        "running as root with setpriv and curl (to connect as another uid)",
        broker_tests::harness::is_root() && on_path("setpriv") && on_path("curl"),
    ) {
        return;
    }
    let mock = fast_mock();
    let (sandbox, daemon, session) = logged_in(&mock);
    // uid 65534 with just enough capability to reach the 0700 socket directory.
    let as_nobody = |program: &std::path::Path| {
        let mut command = sandbox.command(std::path::Path::new("setpriv"));
        command
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=+dac_read_search,+dac_override",
                "--ambient-caps=+dac_read_search,+dac_override",
            ])
            .arg(program);
        command
    };
    // broker-shim itself will not talk to a daemon of another user (impostor.rs)...
    let shim = sandbox.root().join("shim-for-nobody");
    std::fs::copy(&broker_tests::harness::binaries().shim, &shim).unwrap();
    let mut command = as_nobody(&shim);
    command
        .arg("get-token")
        .args(session_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false));
    let message = failure(
        &command.output().expect("setpriv runs"),
        "the shim as 65534",
    );
    assert!(message.contains("belongs to uid 0"), "{message}");
    // ...so a client that does not check, speaking gRPC over HTTP/2 on the socket, stands in
    // for a hostile one: the peer check, not the directory's mode, is what refuses it here.
    let mut curl = as_nobody(std::path::Path::new("curl"));
    curl.args([
        "--silent",
        "--show-error",
        "--http2-prior-knowledge",
        "--unix-socket",
    ])
    .arg(&sandbox.socket)
    .args([
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        "",
        "http://localhost/tokenbroker.v1.Broker/Status",
    ]);
    let output = curl.output().expect("curl runs");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(&session),
        "no session reached uid 65534"
    );
    daemon.wait_for_log("refused a call from uid 65534");
    still_serves(&sandbox, &mock, &session);
}

/// Control characters, escapes and bidi overrides, as a terminal would obey them.
fn assert_plain(text: &str, what: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| {
            (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                || ('\u{202a}'..='\u{202e}').contains(c)
        })
        .collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}: {text:?}");
}

/// Approves the one pending device code, whatever the (hostile) text around it said.
fn approve_pending(mock: &MockEntra) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(code) = mock.state().pending_user_codes().first() {
            assert!(mock.approve(code));
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no device code came");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_identity_providers_escape_sequences_never_reach_a_terminal_or_the_log() {
    let mock = MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        hostile_text: true,
        ..Default::default()
    });
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);

    // brokerctl login, as a person at a terminal would read it.
    let mut login = sandbox.command(&broker_tests::harness::binaries().brokerctl);
    login
        .arg("login")
        .args(session_args(&mock))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = login.spawn().unwrap();
    approve_pending(&mock);
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{said}");
    assert!(said.contains("To sign in, use a web browser"), "{said}");
    assert_plain(&said, "brokerctl login's instructions");
    assert_plain(&String::from_utf8_lossy(&output.stdout), "brokerctl login");

    // The shim signing in from inside kubectl.
    success(&sandbox.ctl(&["logout", "--all"]), "logout");
    let mut shim = sandbox.command(&broker_tests::harness::binaries().shim);
    shim.arg("get-token")
        .args(session_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, true))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = shim.spawn().unwrap();
    approve_pending(&mock);
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{said}");
    assert!(said.contains("To sign in, use a web browser"), "{said}");
    assert_plain(&said, "the shim's login instructions");

    // A refusal whose error_description is hostile.
    let session = credential(&output)["status"]["token"].is_string();
    assert!(session);
    mock.revoke_refresh_tokens();
    let refused = failure(
        &sandbox.ctl(&[
            "refresh",
            "--server-id",
            AKS_SERVER_ID,
            "--tenant-id",
            TENANT_ID,
            "--authority-host",
            &mock.authority_host(),
        ]),
        "a refused refresh",
    );
    assert!(refused.contains("AADSTS50173"), "{refused}");
    assert_plain(&refused, "brokerctl's error line");
    let status = success(&sandbox.ctl(&["status"]), "status");
    assert!(status.contains("revoked"), "{status}");
    assert_plain(&status, "brokerctl status");
    assert_plain(&daemon.log(), "brokerd's log");
}
