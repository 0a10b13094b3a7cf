//! The life of a session after login: serving from memory, refreshing, revocation, logout.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, assert_no_tokens_in, binaries, credential, device_login, exec_info,
    failure, fast_mock, session_args, success,
};
use broker_tests::mock_entra::AKS_SERVER_ID;
use serde_json::Value;

fn token_of(output: &std::process::Output) -> String {
    credential(output)["status"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

fn status(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&success(
        &sandbox.ctl(&["status", "--output", "json"]),
        "status",
    ))
    .expect("status JSON")
}

#[test]
fn fresh_tokens_come_from_memory_and_tokens_near_expiry_are_refreshed() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let shim = || sandbox.shim(&as_strs(&args), Some(&info));

    // A fresh token: the same one, from memory, without asking the IdP.
    let first = token_of(&shim());
    assert_eq!(token_of(&shim()), first);
    assert_eq!(mock.requests("refresh_token"), 0);

    // The IdP now issues tokens shorter than the 10-minute serving margin.
    mock.set_access_token_lifetime(120);
    let refreshed = success(
        &sandbox.ctl(&["refresh", &session, "--output", "json"]),
        "refresh",
    );
    let refreshed: Value = serde_json::from_str(&refreshed).unwrap();
    assert_eq!(refreshed["session_id"], session.as_str());
    assert_eq!(mock.requests("refresh_token"), 1);

    // The in-memory token now has less than the margin left: the next request refreshes.
    let second = token_of(&shim());
    assert_ne!(second, first);
    assert_eq!(mock.requests("refresh_token"), 2);
    mock.verify(&second, AKS_SERVER_ID)
        .expect("a token the mock signed");

    // Back to long tokens: one refresh, then memory again.
    mock.set_access_token_lifetime(3599);
    let third = token_of(&shim());
    assert_eq!(mock.requests("refresh_token"), 3);
    assert_eq!(token_of(&shim()), third);
    assert_eq!(mock.requests("refresh_token"), 3);

    let st = status(&sandbox);
    let s = &st["sessions"][0];
    assert_eq!(s["state"], "fresh");
    assert_eq!(s["account"], "alice@contoso.example");
    assert!(s["last_refresh_at"].as_str().is_some());
    assert!(s["last_error"].is_null());
}

#[test]
fn a_revoked_refresh_token_means_login_required_without_a_request_loop() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    mock.revoke_refresh_tokens();

    let err = failure(&sandbox.ctl(&["refresh", &session]), "refresh");
    assert!(err.contains("AADSTS50173"), "{err}");
    assert!(err.contains("brokerctl login --server-id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let requests = mock.requests("refresh_token");

    let st = status(&sandbox);
    assert_eq!(st["sessions"][0]["state"], "login_required");
    assert!(
        st["sessions"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("AADSTS50173"))
    );

    // The access token from the login is still good, so kubectl keeps working, and nobody
    // asks the IdP again with a refresh token it refused.
    let args = session_args(&mock);
    for _ in 0..3 {
        token_of(&sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))));
    }
    assert_eq!(mock.requests("refresh_token"), requests);

    // A new login mends it.
    device_login(&sandbox, &mock);
    success(&sandbox.ctl(&["refresh", &session]), "refresh after login");
    assert_eq!(status(&sandbox)["sessions"][0]["state"], "fresh");
}

#[test]
fn logout_forgets_the_session_and_its_refresh_token() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    token_of(&sandbox.shim(&as_strs(&args), Some(&info)));

    let out = success(
        &sandbox.ctl(&["logout", &session, "--output", "json"]),
        "logout",
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["logged_out"][0], session.as_str());
    assert_eq!(status(&sandbox)["sessions"].as_array().unwrap().len(), 0);

    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&info)),
        "shim after logout",
    );
    assert!(err.starts_with("broker-shim: login required"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = failure(&sandbox.ctl(&["logout", &session]), "second logout");
    assert!(err.contains("no session"), "{err}");

    // Logging out by the session's flags, and of everything.
    device_login(&sandbox, &mock);
    let mut by_flags = vec!["logout".to_string()];
    by_flags.extend(session_args(&mock));
    success(&sandbox.ctl(&as_strs(&by_flags)), "logout by flags");
    device_login(&sandbox, &mock);
    success(&sandbox.ctl(&["logout", "--all"]), "logout --all");
    assert_eq!(status(&sandbox)["sessions"].as_array().unwrap().len(), 0);
}

#[test]
fn without_a_terminal_the_shim_fails_fast_with_the_login_command() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let args = session_args(&mock);
    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))),
        "shim",
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let expected = format!(
        "run: brokerctl login --server-id {AKS_SERVER_ID} --client-id 80faf920-1908-4b52-b5ef-a8e7bedfc67a \
         --tenant-id 00000000-0000-0000-0000-000000000001 --authority-host {} --login devicecode",
        mock.authority_host()
    );
    assert!(err.trim().ends_with(&expected), "{err}");
    assert_eq!(
        mock.requests("devicecode"),
        0,
        "no prompt without a terminal"
    );
}

#[test]
fn at_a_terminal_the_shim_signs_in_once_then_prints_the_credential() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut child = sandbox
        .command(&binaries().shim)
        .arg("get-token")
        .args(session_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, true))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shim starts");
    // The device code instructions arrive on stderr; stdout is the credential's alone.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let message = stderr.next().expect("a line").expect("text");
    assert!(
        message.starts_with("To sign in, use a web browser"),
        "{message}"
    );
    let code = message
        .split("enter the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the message names the code");
    assert!(mock.approve(code));
    let output = child.wait_with_output().expect("shim exits");
    let cred = credential(&output);
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_eq!(mock.requests("devicecode"), 1);
}

#[test]
fn even_trace_logs_of_a_login_and_refreshes_hold_no_token() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon_logging(&["--store", "memory"], "trace");
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    success(&sandbox.ctl(&["refresh", &session]), "refresh");
    success(&sandbox.ctl(&["refresh", &session]), "refresh");
    token_of(&sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    ));
    // The audit trail names the session and the calling process, never the token.
    let line = daemon.wait_for_log("audit: token served");
    assert!(line.contains(&format!("session={session}")), "{line}");
    let shim = binaries().shim.display().to_string();
    assert!(line.contains(&format!("exe={shim}")), "{line}");
    assert!(line.contains("pid="), "{line}");
    // The shim's parent is this test.
    let me = std::env::current_exe().unwrap().display().to_string();
    assert!(line.contains(&format!("parent_exe={me}")), "{line}");
    let log = daemon.log();
    assert!(log.contains("TRACE"), "trace logging is on");
    assert_eq!(mock.issued_refresh_tokens().len(), 3);
    assert_no_tokens_in(&log, &mock, "brokerd's trace log");
}
