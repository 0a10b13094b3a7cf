//! A broker forwarded over real OpenSSH: sign in once here, and a remote machine (another user
//! behind sshd on loopback, with broker-shim and brokerctl but no brokerd and no keyring) gets
//! tokens of the sessions allowed for it, through `brokerctl forward ssh`, and nothing else.

use broker_tests::harness::ssh::{REMOTE_USER, Sshd, remote_home, remote_socket_dir};
use broker_tests::harness::{
    Sandbox, device_login, fast_mock, files_containing, require, session_args, success,
};
use broker_tests::mock_entra::AKS_SERVER_ID;
use serde_json::Value;

fn sshd_available() -> bool {
    require(
        "root, OpenSSH (openssh-server, openssh-client) and the user tb-remote (useradd \
         --create-home tb-remote)",
        Sshd::available(),
    )
}

/// `brokerctl forward ssh` to the remote side, running `command` there.
fn forwarded(sandbox: &Sandbox, sshd: &Sshd, command: &[String]) -> std::process::Output {
    let mut args = vec!["forward".to_string(), "ssh".into(), sshd.destination()];
    args.extend(sshd.options());
    args.push("--".into());
    args.extend(command.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sandbox.ctl(&args)
}

fn remote_shim(sshd: &Sshd, session: &[String]) -> Vec<String> {
    let mut command = vec![sshd.remote_program("broker-shim"), "get-token".into()];
    command.extend(session.iter().cloned());
    command
}

#[test]
fn a_remote_shim_gets_tokens_only_of_allowed_sessions_and_can_do_nothing_else() {
    if !sshd_available() {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let status: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    let forward_socket = status["forward_socket"]
        .as_str()
        .expect("forward.sock served");
    assert!(forward_socket.ends_with("/forward.sock"), "{status}");
    let done = device_login(&sandbox, &mock);
    let session = done["session_id"].as_str().unwrap().to_string();
    let sshd = Sshd::start();
    let session_flags = session_args(&mock);

    // Not allowed yet: refused, with what to run on this machine.
    let refused = forwarded(&sandbox, &sshd, &remote_shim(&sshd, &session_flags));
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("session {session}"))
            && said.contains("is not allowed on the forwarding socket"),
        "{said}"
    );
    assert!(
        said.contains(&format!("brokerctl forward allow {session}")),
        "{said}"
    );
    assert!(refused.stdout.is_empty());

    // Allowed: the remote shim prints a credential with a token the mock signed.
    let allowed = success(
        &sandbox.ctl(&["forward", "allow", &session]),
        "forward allow",
    );
    assert!(
        allowed.contains(&format!("Session {session} is served")),
        "{allowed}"
    );
    let remote = forwarded(&sandbox, &sshd, &remote_shim(&sshd, &session_flags));
    let stdout = String::from_utf8_lossy(&remote.stdout);
    assert!(
        remote.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let credential: Value = serde_json::from_str(stdout.trim()).expect("an ExecCredential");
    mock.verify(
        credential["status"]["token"].as_str().unwrap(),
        AKS_SERVER_ID,
    )
    .expect("a token the mock signed");

    // The remote side cannot sign out, sign in, list sessions or send credentials.
    let brokerctl = sshd.remote_program("brokerctl");
    for (command, what) in [
        (
            vec![brokerctl.clone(), "logout".into(), "--all".into()],
            "logout",
        ),
        (vec![brokerctl.clone(), "status".into()], "status"),
        (
            vec![brokerctl.clone(), "refresh".into(), session.clone()],
            "refresh",
        ),
    ] {
        let out = forwarded(&sandbox, &sshd, &command);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} went through: {said}");
        assert!(
            said.contains(&format!("{what} is not served on the forwarding socket")),
            "{what}: {said}"
        );
    }
    let mut secret = remote_shim(&sshd, &session_flags);
    secret.extend([
        "--login".into(),
        "spn".into(),
        "--client-id".into(),
        "11111111-0000-0000-0000-000000000001".into(),
        "--client-secret".into(),
        "s3cret".into(),
    ]);
    let out = forwarded(&sandbox, &sshd, &secret);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("takes no credentials"), "{said}");
    // The session is still there, signed in.
    let status: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    let info = &status["sessions"][0];
    assert_eq!(info["id"], session.as_str());
    assert_eq!(info["forwarding_allowed"], true);
    assert_eq!(info["forwarded_tokens_served"], 1);
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(
        text.contains(&format!("serves {session} (1 served)")),
        "{text}"
    );

    // Audited as forwarded.
    let line = daemon.wait_for_log("via=forward.sock");
    assert!(line.contains(&session), "{line}");

    // Nothing of the refresh token reached the remote side.
    let socket_dir = remote_socket_dir().unwrap();
    for token in mock.issued_refresh_tokens() {
        for dir in [remote_home(), socket_dir.clone()] {
            let found = files_containing(&dir, &token);
            assert!(
                found.is_empty(),
                "a refresh token is in {found:?} on {REMOTE_USER}'s side"
            );
        }
    }

    // Denied again: refused again.
    success(&sandbox.ctl(&["forward", "deny", &session]), "forward deny");
    let refused = forwarded(&sandbox, &sshd, &remote_shim(&sshd, &session_flags));
    assert!(!refused.status.success());
}

#[test]
fn a_remote_shim_with_nothing_forwarded_says_how_to_forward_and_starts_nothing() {
    if !sshd_available() {
        return;
    }
    let mock = fast_mock();
    let sshd = Sshd::start();
    let mut command = vec![sshd.remote_program("broker-shim"), "get-token".to_string()];
    command.extend(session_args(&mock));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = sshd.run(&command);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("no brokerd is installed here"), "{said}");
    assert!(
        said.contains("the broker on the other end is unreachable"),
        "{said}"
    );
    assert!(said.contains("brokerctl forward ssh"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
}
