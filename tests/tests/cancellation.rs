//! A caller that goes away halfway: kubectl interrupted (its shim killed) while the identity
//! provider is slow to answer a refresh. The refresh is brokerd's, not the caller's: it runs to
//! its end, the rotated refresh token is stored (at an IdP that rotates strictly, the only one
//! still valid), and the session goes on refreshing on schedule.

use std::process::Stdio;
use std::time::Duration;

use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, binaries, credential, device_login, exec_info, session_args, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, MockConfig, MockEntra};

#[test]
fn a_caller_killed_mid_refresh_cancels_nothing_and_the_rotated_token_is_kept() {
    let mock = MockEntra::start(MockConfig {
        device_code_interval: 1,
        strict_rotation: true,
        ..MockConfig::default()
    });
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    let session = device_login(&sandbox, &mock)["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = sandbox.start_ctl(&["status", "--watch"]);
    assert_eq!(watch.next_event()["event"], "watching");

    // Fifty minutes later the token has less than its ten minutes to spare: the next request
    // refreshes, and the IdP takes its time.
    daemon.advance_clock(50 * 60);
    mock.set_delay(Some(Duration::from_secs(2)));
    let mut shim = sandbox
        .command(&binaries().shim)
        .arg("get-token")
        .args(session_args(&mock))
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        mock.wait_for_requests("refresh_token", 1, Duration::from_secs(60)),
        "the refresh reached the IdP"
    );
    // kubectl is interrupted: its shim dies with the refresh in flight.
    shim.kill().unwrap();
    shim.wait().unwrap();
    mock.set_delay(None);

    // The refresh ends anyway, for nobody.
    let event = loop {
        let event = watch.next_event();
        if event["session_id"] == session.as_str() && event["event"] != "missed" {
            break event;
        }
    };
    assert_eq!(event["event"], "refreshed", "{event}");
    assert_eq!(event["session"]["state"], "fresh", "{event}");
    assert!(
        event["session"]["next_refresh_at"].is_string(),
        "a next refresh is planned: {event}"
    );

    // The next kubectl gets the refreshed token without asking the IdP.
    let token = credential(&sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    ))["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    mock.verify(&token, AKS_SERVER_ID).unwrap();
    assert_eq!(mock.requests("refresh_token"), 1);
    // And the refresh token kept is the rotated one: the old one would now be reuse, which
    // revokes the sign-in.
    success(&sandbox.ctl(&["refresh", &session]), "the next refresh");
    assert_eq!(mock.requests("refresh_token_reused"), 0);
    assert_eq!(mock.requests("refresh_token"), 2);
}
