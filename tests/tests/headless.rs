//! Machines without a Secret Service (servers, SSH hosts, containers, WSL without a desktop):
//! brokerd keeps refresh tokens in the real kernel keyring, says so, and where even keyctl is
//! blocked (a container's seccomp profile) refuses every sign-in before it prompts.

#![cfg(target_os = "linux")]

use std::process::Command;

use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, assert_no_tokens_in, credential, device_login, exec_info, fast_mock,
    on_path, require, session_args, success,
};
use broker_tests::mock_entra::AKS_SERVER_ID;
use serde_json::Value;

/// The payload of `token-broker:KEY` in this user's persistent keyring, read with keyctl(1).
/// The keyring is linked into the user keyring, so that each keyctl process possesses it (a
/// link into `@s` would go to a session keyring of that one process).
fn kernel_key(key: &str) -> Option<String> {
    let ring = Command::new("keyctl")
        .args(["get_persistent", "@u"])
        .output()
        .expect("keyctl runs");
    let ring = String::from_utf8_lossy(&ring.stdout).trim().to_string();
    let found = Command::new("keyctl")
        .args(["search", &ring, "user", &format!("token-broker:{key}")])
        .output()
        .expect("keyctl runs");
    if !found.status.success() {
        return None;
    }
    let id = String::from_utf8_lossy(&found.stdout).trim().to_string();
    let payload = Command::new("keyctl")
        .args(["pipe", &id])
        .output()
        .expect("keyctl runs");
    payload
        .status
        .success()
        .then(|| String::from_utf8_lossy(&payload.stdout).into_owned())
}

fn keyctl_available() -> bool {
    require(
        "keyctl (package keyutils) and a kernel keyring",
        on_path("keyctl")
            && Command::new("keyctl")
                .args(["get_persistent", "@u"])
                .output()
                .is_ok_and(|o| o.status.success()),
    )
}

/// A sandbox whose session bus is nowhere: no Secret Service can answer.
fn without_a_session_bus() -> Sandbox {
    let mut sandbox = Sandbox::new();
    let nowhere = sandbox.root().join("no-bus");
    sandbox.set_env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", nowhere.display()),
    );
    sandbox
}

fn status(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap()
}

#[test]
fn without_a_session_bus_a_login_is_kept_in_the_kernel_keyring_across_a_restart() {
    if !keyctl_available() {
        return;
    }
    let mock = fast_mock();
    let sandbox = without_a_session_bus();
    let mut daemon = sandbox.start_daemon(&[]);
    let started = daemon.wait_for_log("serving on");
    assert!(
        started.contains("secret store: kernel keyring"),
        "{started}"
    );
    assert!(started.contains("not reboots"), "{started}");
    let first = status(&sandbox);
    assert_eq!(first["secret_store"], "kernel keyring");
    assert!(
        first["secret_store_caveat"]
            .as_str()
            .unwrap()
            .contains("survives logouts"),
        "{first}"
    );

    let done = device_login(&sandbox, &mock);
    let session = done["session_id"].as_str().unwrap().to_string();
    let key = format!("refresh-token/{session}");
    let issued = mock.issued_refresh_tokens();
    assert_eq!(kernel_key(&key).as_deref(), Some(issued[0].as_str()));

    // What the text status and doctor say of it.
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(
        text.contains("secret store: kernel keyring (the user's persistent keyring"),
        "{text}"
    );
    let doctor = sandbox.ctl(&[
        "doctor",
        "-o",
        "json",
        "--authority-host",
        &mock.authority_host(),
    ]);
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let keyring = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "keyring")
        .expect("a keyring check");
    assert_eq!(keyring["level"], "warn", "{keyring}");
    assert!(
        keyring["summary"]
            .as_str()
            .unwrap()
            .contains("a reboot means signing in again"),
        "{keyring}"
    );
    let first_log = daemon.log();
    assert!(daemon.stop().success());

    // A new brokerd finds the session in its index and the token in the kernel: no login.
    let daemon = sandbox.start_daemon(&[]);
    let info = exec_info(EXEC_V1, false);
    let args = session_args(&mock);
    let cred = credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_eq!(mock.requests("devicecode"), 1, "no second login");
    // Entra rotated it: the kernel holds the newest.
    let newest = kernel_key(&key).expect("still stored");
    assert!(mock.issued_refresh_tokens().contains(&newest));

    // No refresh token in any file, nor in either log.
    for token in mock.issued_refresh_tokens() {
        let found = sandbox.files_containing(&token);
        assert!(found.is_empty(), "a refresh token is in {found:?}");
    }
    assert_no_tokens_in(&first_log, &mock, "the first brokerd's log");
    assert_no_tokens_in(&daemon.log(), &mock, "the second brokerd's log");

    // Logging out takes it out of the kernel.
    success(&sandbox.ctl(&["logout", &session]), "logout");
    assert_eq!(kernel_key(&key), None);
}

#[test]
fn where_keyctl_is_blocked_and_no_secret_service_answers_nobody_is_asked_to_sign_in() {
    let mock = fast_mock();
    let mut sandbox = without_a_session_bus();
    sandbox.without_keyctl = true;
    let daemon = sandbox.start_daemon(&[]);
    let started = daemon.wait_for_log("serving on");
    assert!(started.contains("no secret store"), "{started}");

    let mut login = sandbox.start_login(&as_strs(&session_args(&mock)));
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    assert_eq!(failed["reason"], "STORE_UNAVAILABLE");
    let message = failed["message"].as_str().unwrap();
    for words in [
        "cannot sign in",
        "kernel keyring",
        "seccomp",
        "brokerctl forward ssh",
        "--store memory",
    ] {
        assert!(message.contains(words), "{words:?} missing: {message}");
    }
    assert!(!message.contains('\n'), "{message}");
    let (code, _) = login.finish();
    assert!(!code.success());
    assert_eq!(mock.requests("devicecode"), 0, "nobody was shown a code");
}
