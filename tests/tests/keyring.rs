//! The real OS keyring: gnome-keyring's Secret Service on a private D-Bus session bus.

use broker_tests::harness::{
    EXEC_V1, Sandbox, SecretService, as_strs, assert_no_tokens_in, credential, device_login,
    exec_info, failure, fast_mock, require, session_args, success,
};
use broker_tests::mock_entra::AKS_SERVER_ID;
use serde_json::Value;

#[test]
fn refresh_tokens_live_in_the_secret_service_and_survive_a_daemon_restart() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&[]);

    let done = device_login(&sandbox, &mock);
    let session = done["session_id"].as_str().unwrap().to_string();
    let key = format!("refresh-token/{session}");
    let issued = mock.issued_refresh_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        SecretService::lookup(&sandbox, &key).as_deref(),
        Some(issued[0].as_str()),
        "secret-tool sees the refresh token in the keyring"
    );
    let status: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(status["secret_store"], "Secret Service");

    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    let first_log = daemon.log();
    assert!(daemon.stop().success());

    // A new daemon knows the session from its index and redeems the refresh token it finds in
    // the keyring: no new login.
    let daemon = sandbox.start_daemon(&[]);
    let status: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(status["sessions"][0]["id"], session.as_str());
    assert_eq!(status["sessions"][0]["account"], "alice@contoso.example");
    // Signed in, with no access token yet: the scheduler refreshes an active session at once,
    // so it may already be at work (or done) by the time status asks.
    let state = status["sessions"][0]["state"].as_str().unwrap();
    assert!(
        ["refresh_due", "refreshing", "fresh"].contains(&state),
        "{state}"
    );
    let cred = credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_eq!(mock.requests("devicecode"), 1, "no second login");
    assert_eq!(mock.requests("refresh_token"), 1);

    // The rotated refresh token replaced the old one in the keyring.
    let newest = mock
        .issued_refresh_tokens()
        .into_iter()
        .find(|t| *t != issued[0])
        .expect("a rotated refresh token");
    assert_eq!(
        SecretService::lookup(&sandbox, &key).as_deref(),
        Some(newest.as_str())
    );

    // No refresh token reached a file: not the index, not the logs, not the keyring's own
    // (encrypted) files, nothing under HOME, the state dir or the runtime dir.
    for token in mock.issued_refresh_tokens() {
        let found = sandbox.files_containing(&token);
        assert!(found.is_empty(), "a refresh token is in {found:?}");
    }
    assert_no_tokens_in(&first_log, &mock, "the first brokerd's log");
    assert_no_tokens_in(&daemon.log(), &mock, "the second brokerd's log");
    assert!(sandbox.state_dir.join("sessions.json").exists());

    // Logging out removes the keyring entry.
    success(&sandbox.ctl(&["logout", &session]), "logout");
    assert_eq!(SecretService::lookup(&sandbox, &key), None);
    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&info)),
        "shim after logout",
    );
    assert!(err.contains("brokerctl login"), "{err}");
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_refresh_restarts_without_a_new_login() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let daemon = sandbox.start_daemon(&["--test-clock"]);
    device_login(&sandbox, &mock);

    // The token expires; the scheduler's refresh reaches the IdP, which is slow to answer;
    // brokerd dies right then.
    mock.set_delay(Some(std::time::Duration::from_secs(30)));
    daemon.advance_clock(2 * 3600);
    assert!(mock.wait_for_requests("refresh_token", 1, broker_tests::harness::DEADLINE));
    drop(daemon); // SIGKILL
    mock.set_delay(None);

    let _daemon = sandbox.start_daemon(&[]);
    let args = session_args(&mock);
    let cred = credential(&sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_eq!(mock.requests("devicecode"), 1, "no new login");
}

/// `brokerctl login <args>` with `secret` piped to its stdin; returns the logged_in event.
fn login_with_stdin(sandbox: &Sandbox, args: &[String], secret: &str) -> Value {
    use std::io::Write;
    let mut child = sandbox
        .command(&broker_tests::harness::binaries().brokerctl)
        .arg("login")
        .args(args)
        .args(["--output", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = success(&out, "brokerctl login");
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn a_service_principal_secret_lives_in_the_keyring_and_a_ropc_password_only_when_asked() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    use broker_tests::mock_entra::{App, TENANT_ID};
    let mock = fast_mock();
    let app = "aaaaaaaa-0000-0000-0000-00000000000a";
    let secret = "keyring-kept spn secret 9f8e7d";
    mock.register_app(
        app,
        App {
            secret: Some(secret.into()),
            ..App::default()
        },
    );
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&[]);

    let spn: Vec<String> = [
        "--login",
        "spn",
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        app,
        "--authority-host",
        &mock.authority_host(),
    ]
    .map(String::from)
    .to_vec();
    let done = login_with_stdin(&sandbox, &spn, secret);
    let id = done["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        SecretService::lookup(&sandbox, &format!("client-secret/{id}")).as_deref(),
        Some(secret)
    );

    let password = "correct horse battery staple";
    let ropc: Vec<String> = [
        "--login",
        "ropc",
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--username",
        "alice@contoso.example",
        "--authority-host",
        &mock.authority_host(),
    ]
    .map(String::from)
    .to_vec();
    let done = login_with_stdin(&sandbox, &ropc, password);
    let ropc_id = done["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        SecretService::lookup(&sandbox, &format!("password/{ropc_id}")),
        None
    );
    assert!(SecretService::lookup(&sandbox, &format!("refresh-token/{ropc_id}")).is_some());
    let mut remember = ropc.clone();
    remember.push("--remember-password".into());
    login_with_stdin(&sandbox, &remember, password);
    assert_eq!(
        SecretService::lookup(&sandbox, &format!("password/{ropc_id}")).as_deref(),
        Some(password)
    );

    // A restarted brokerd finds the service principal's secret in the keyring.
    assert!(daemon.stop().success());
    let daemon = sandbox.start_daemon(&[]);
    let cred = credential(&sandbox.shim(&as_strs(&spn), Some(&exec_info(EXEC_V1, false))));
    assert_eq!(
        mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
            .unwrap()
            .azp,
        app
    );
    let log = daemon.log();
    assert!(!log.contains(secret) && !log.contains(password));
    for found in [
        sandbox.files_containing(secret),
        sandbox.files_containing(password),
    ] {
        assert!(found.is_empty(), "a secret is in {found:?}");
    }

    // Logging out removes every secret the session had.
    success(&sandbox.ctl(&["logout", "--all"]), "logout");
    for key in [
        format!("client-secret/{id}"),
        format!("password/{ropc_id}"),
        format!("refresh-token/{ropc_id}"),
    ] {
        assert_eq!(SecretService::lookup(&sandbox, &key), None, "{key}");
    }
}

/// A keyring that hangs (gnome-keyring stopped): what memory holds is served at once; a
/// refresh still counts, its rotated refresh token kept in memory and said so in status; the
/// token reaches the store once the keyring answers (at shutdown at the latest), so that a
/// restart, at an IdP that rotates strictly, needs no new login. A call that needs the store
/// fails in seconds, in one line, instead of hanging.
#[test]
fn a_hung_keyring_delays_nothing_memory_can_serve_and_loses_no_rotated_token() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        strict_rotation: true,
        ..Default::default()
    });
    let mut sandbox = Sandbox::new();
    let keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&["--test-clock"]);
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let key = format!("refresh-token/{session}");
    let first = SecretService::lookup(&sandbox, &key).expect("stored at login");

    keyring.hang(true);
    let started = std::time::Instant::now();
    credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a fresh token needs no keyring"
    );
    // The refresh's rotated token cannot be stored: it counts, in memory, and status says so.
    daemon.advance_clock(50 * 60);
    success(
        &sandbox.ctl(&["refresh", &session]),
        "a refresh with the keyring hung",
    );
    let status: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    let unsaved = status["sessions"][0]["unsaved_refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("status says the token is in memory only: {status}"));
    assert!(unsaved.contains("did not answer within"), "{unsaved}");
    assert!(status["secret_store_problem"].is_string(), "{status}");
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(text.contains("in brokerd's memory only"), "{text}");

    // The keyring comes back; brokerd stops: the rotated token is stored by then.
    keyring.hang(false);
    assert!(daemon.stop().success());
    let stored = SecretService::lookup(&sandbox, &key).expect("a refresh token is stored");
    assert_ne!(stored, first, "the rotated one, not the one from the login");

    // A restarted brokerd needs the keyring for its first token: with the keyring hung, the
    // shim hears why within seconds.
    keyring.hang(true);
    // Told to use the Secret Service: left to choose, brokerd would take the kernel keyring
    // over one that does not answer at start.
    let _daemon = sandbox.start_daemon(&["--store", "secret-service"]);
    let started = std::time::Instant::now();
    let said = failure(&sandbox.shim(&as_strs(&args), Some(&info)), "shim");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(said.contains("Secret Service"), "{said}");
    assert!(said.contains("did not answer within"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    keyring.hang(false);

    // And the token it reads then is the rotated one: no reuse, no new login.
    success(
        &sandbox.ctl(&["refresh", &session]),
        "refresh after the restart",
    );
    credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    assert_eq!(mock.requests("refresh_token_reused"), 0);
    assert_eq!(mock.requests("devicecode"), 1, "no new login");
}

/// A session index with times near the end of `i64` (a corrupt or hand-edited file): brokerd
/// starts, status shows the session, and it keeps working; nothing panics.
#[test]
fn absurd_times_in_the_session_index_are_clamped_not_fatal() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&[]);
    device_login(&sandbox, &mock);
    assert!(daemon.stop().success());

    let index = sandbox.state_dir.join("sessions.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    file["sessions"][0]["last_refresh_at"] = Value::from(i64::MAX - 5);
    file["sessions"][0]["logged_in_at"] = Value::from(i64::MAX);
    std::fs::write(&index, file.to_string()).unwrap();

    let daemon = sandbox.start_daemon(&[]);
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(text.contains("alice@contoso.example"), "{text}");
    let json: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert!(json["sessions"][0]["last_refresh_at"].is_string(), "{json}");
    let args = session_args(&mock);
    credential(&sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))));
    success(&sandbox.ctl(&["status", "-o", "wide"]), "status -o wide");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// The session index cannot be written (here a directory stands where the file goes, as
/// good as a full disk): the login works, status and doctor say so, and a restarted brokerd,
/// which finds no index, still finds the session through its refresh token in the keyring.
#[test]
fn a_session_index_that_cannot_be_written_loses_no_session() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&[]);
    let blocker = sandbox.state_dir.join("sessions.json");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    device_login(&sandbox, &mock);

    let status = success(&sandbox.ctl(&["status"]), "status");
    assert!(status.contains("session index: NOT saved"), "{status}");
    let doctor = sandbox.ctl(&["doctor"]);
    let said = String::from_utf8_lossy(&doctor.stdout);
    let line = said
        .lines()
        .find(|l| l.contains("session_index"))
        .unwrap_or_else(|| panic!("doctor checks the index: {said}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert_eq!(doctor.status.code(), Some(2));

    assert!(daemon.stop().success());
    std::fs::remove_dir_all(&blocker).unwrap();
    let _daemon = sandbox.start_daemon(&[]);
    let args = session_args(&mock);
    credential(&sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))));
    assert_eq!(mock.requests("devicecode"), 1, "no new login");
    let status = success(&sandbox.ctl(&["status"]), "status");
    assert!(status.contains("alice@contoso.example"), "{status}");
}

/// Refresh tokens have no size a store may assume: Windows' Credential Manager holds 2,560
/// bytes, and tools that write macOS's Keychain through the `security` command fail near 4 KB
/// (int128/kubelogin #1255). A 16 KB one is kept whole and redeemed after a restart.
#[test]
fn a_refresh_token_of_16_kb_is_kept_whole_and_redeemed_after_a_restart() {
    if !require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    ) {
        return;
    }
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        refresh_token_length: 16 * 1024,
        ..Default::default()
    });
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let mut daemon = sandbox.start_daemon(&[]);
    let done = device_login(&sandbox, &mock);
    let key = format!("refresh-token/{}", done["session_id"].as_str().unwrap());
    let issued = mock.issued_refresh_tokens();
    assert_eq!(issued[0].len(), 16 * 1024);
    assert_eq!(
        SecretService::lookup(&sandbox, &key).as_deref(),
        Some(issued[0].as_str())
    );
    assert!(daemon.stop().success());

    let _daemon = sandbox.start_daemon(&[]);
    let info = exec_info(EXEC_V1, false);
    let cred = credential(&sandbox.shim(&as_strs(&session_args(&mock)), Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_eq!(mock.requests("devicecode"), 1, "no second login");
    assert!(
        mock.requests("refresh_token") >= 1,
        "redeemed from the store"
    );
}
