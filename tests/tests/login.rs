//! Signing in through brokerd against the mock Entra ID, then getting tokens through the shim.

use broker_tests::harness::{
    EXEC_V1, EXEC_V1BETA1, Sandbox, as_strs, assert_no_tokens_in, binaries, browse, credential,
    device_login, exec_info, failure, fast_mock, on_path, require, session_args, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, AuthorizeOutcome, TENANT_ID};

#[test]
fn device_code_login_then_the_shim_prints_credentials_for_both_api_versions() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);

    let done = device_login(&sandbox, &mock);
    assert_eq!(done["account"], "alice@contoso.example");
    assert_eq!(done["session_id"].as_str().map(str::len), Some(12));
    assert!(
        done["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let args = session_args(&mock);
    for (api_version, info) in [
        (EXEC_V1, Some(exec_info(EXEC_V1, false))),
        (EXEC_V1BETA1, Some(exec_info(EXEC_V1BETA1, false))),
        // No KUBERNETES_EXEC_INFO at all: kubelogin's default, v1beta1.
        (EXEC_V1BETA1, None),
    ] {
        let cred = credential(&sandbox.shim(&as_strs(&args), info.as_deref()));
        assert_eq!(cred["apiVersion"], api_version);
        assert_eq!(cred["kind"], "ExecCredential");
        let token = cred["status"]["token"].as_str().expect("token");
        let claims = mock
            .verify(token, AKS_SERVER_ID)
            .expect("a token the mock signed");
        assert_eq!(claims.tid, TENANT_ID);
        assert_eq!(claims.upn.as_deref(), Some("alice@contoso.example"));
        let expiry = cred["status"]["expirationTimestamp"]
            .as_str()
            .expect("expiry");
        let expiry = humantime::parse_rfc3339(expiry).expect("RFC 3339");
        let exp = std::time::UNIX_EPOCH + std::time::Duration::from_secs(claims.exp);
        assert!(expiry <= exp, "the credential must not outlive the token");
        assert!(expiry > std::time::SystemTime::now());
    }
    // Served from memory: the device code was redeemed once and nothing was refreshed.
    assert!(mock.requests("device_code") >= 1);
    assert_eq!(mock.requests("refresh_token"), 0);
    assert_no_tokens_in(&daemon.log(), &mock, "brokerd's log");
}

#[test]
fn a_declined_device_code_fails_the_login_with_a_reason() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let args = session_args(&mock);
    let mut login = sandbox.start_login(&as_strs(&args));
    let code = login.next_event();
    assert!(mock.decline(code["user_code"].as_str().unwrap()));
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    assert_eq!(failed["reason"], "LOGIN_FAILED");
    assert!(
        failed["message"].as_str().unwrap().contains("declined"),
        "{failed}"
    );
    assert_eq!(login.finish().0.code(), Some(1));

    // Nothing was stored: the shim still needs a login.
    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))),
        "shim",
    );
    assert!(err.contains("brokerctl login"), "{err}");
}

#[test]
fn interactive_login_with_pkce_through_the_loopback_redirect() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = session_args(&mock);
    args.extend([
        "--login".into(),
        "interactive".into(),
        "--no-browser".into(),
    ]);
    let mut login = sandbox.start_login(&as_strs(&args));
    let open = login.next_event();
    assert_eq!(open["event"], "open_url", "{open}");
    let url = url::Url::parse(open["url"].as_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["response_type"], "code");
    assert!(query["scope"].contains(&format!("{AKS_SERVER_ID}/.default")));
    assert!(query["scope"].contains("offline_access"));
    let redirect = url::Url::parse(&query["redirect_uri"]).unwrap();
    assert_eq!(redirect.host_str(), Some("localhost"));

    // A forged redirect with the wrong state is refused and does not end the login.
    let port = redirect.port().unwrap();
    let (status, _) = browse(&format!("http://127.0.0.1:{port}/?code=forged&state=wrong"));
    assert_eq!(status, 400);

    let (status, page) = browse(url.as_str());
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Signed in"), "{page}");
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    assert_eq!(done["account"], "alice@contoso.example");
    assert!(login.finish().0.success());
    assert_eq!(mock.requests("authorization_code"), 1);

    let mut shim_args = session_args(&mock);
    shim_args.extend(["--login".into(), "interactive".into()]);
    let cred = credential(&sandbox.shim(&as_strs(&shim_args), Some(&exec_info(EXEC_V1, false))));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    assert_no_tokens_in(&daemon.log(), &mock, "brokerd's log");
}

#[test]
fn interactive_login_the_user_refuses_reports_the_idp_error() {
    let mock = fast_mock();
    mock.set_authorize_outcome(AuthorizeOutcome::Deny);
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = session_args(&mock);
    args.extend([
        "--login".into(),
        "interactive".into(),
        "--no-browser".into(),
    ]);
    let mut login = sandbox.start_login(&as_strs(&args));
    let open = login.next_event();
    let (status, page) = browse(open["url"].as_str().unwrap());
    assert_eq!(status, 200);
    assert!(page.contains("access_denied"), "{page}");
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed");
    assert_eq!(failed["reason"], "LOGIN_FAILED");
    assert!(
        failed["message"].as_str().unwrap().contains("AADSTS65004"),
        "{failed}"
    );
    assert_eq!(login.finish().0.code(), Some(1));
}

/// A stand-in for the user's browser, for `$BROWSER`: it loads the URL it is given and follows
/// the redirects, as a browser does.
fn fake_browser(sandbox: &Sandbox) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = sandbox.root().join("browser");
    std::fs::write(&path, "#!/bin/sh\nexec curl -fsSL -o /dev/null \"$1\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn at_a_terminal_the_shim_opens_the_browser_for_an_interactive_login() {
    if !require("curl (the stand-in browser)", on_path("curl")) {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let output = sandbox
        .command(&binaries().shim)
        .arg("get-token")
        .args(session_args(&mock))
        .args(["--login", "interactive"])
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, true))
        .env("BROWSER", fake_browser(&sandbox))
        .output()
        .unwrap();
    let cred = credential(&output);
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/oauth2/v2.0/authorize?"),
        "the URL is shown too: {stderr}"
    );
    assert_eq!(mock.requests("authorization_code"), 1);
}

#[test]
fn brokerctl_login_opens_the_browser_unless_told_not_to() {
    if !require("curl (the stand-in browser)", on_path("curl")) {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = vec!["login".to_string()];
    args.extend(session_args(&mock));
    args.extend(["--login".into(), "interactive".into()]);
    let output = sandbox
        .command(&binaries().brokerctl)
        .args(&args)
        .env("BROWSER", fake_browser(&sandbox))
        .output()
        .unwrap();
    let stdout = success(&output, "brokerctl login");
    assert!(
        stdout.contains("Signed in as alice@contoso.example"),
        "{stdout}"
    );
}

#[test]
fn login_with_a_profile_saves_it_and_the_name_alone_serves_afterwards() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let config = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let before = "# tuned by hand\n[refresh]\njitter = 0.2  # less spread\n";
    std::fs::write(&config, before).unwrap();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);

    let mut args = vec!["--profile".to_string(), "dev".to_string()];
    args.extend(session_args(&mock));
    let mut login = sandbox.start_login(&as_strs(&args));
    let code = login.next_event();
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    let (status, stderr) = login.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("Saved profile dev in"), "{stderr}");

    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with(before), "the rest stays as it was: {text}");
    assert!(text.contains("[profiles.dev]"), "{text}");
    assert!(
        text.contains(&format!("server_id = \"{AKS_SERVER_ID}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("tenant_id = \"{TENANT_ID}\"")),
        "{text}"
    );

    // brokerd picks the profile up on its own, and the name alone now names the session.
    daemon.wait_for_log("configuration reloaded");
    let info = exec_info(EXEC_V1, false);
    let cred = credential(&sandbox.shim(&["--profile", "dev"], Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token for the profile's server");
    let status: serde_json::Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["sessions"][0]["id"], done["session_id"]);
    assert_eq!(status["config"]["profiles"][0], "dev");

    // Logging in again with the same flags writes nothing.
    let mut again = sandbox.start_login(&["--profile", "dev", "--server-id", AKS_SERVER_ID]);
    let code = again.next_event();
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
    assert_eq!(again.next_event()["event"], "logged_in");
    let (status, stderr) = again.finish();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("Saved profile"), "{stderr}");
}

#[test]
fn a_bad_profile_is_refused_before_anything_is_written() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = vec![
        "login",
        "--profile",
        "dev",
        "--environment",
        "AzureMoonCloud",
    ];
    let session = session_args(&mock);
    args.extend(as_strs(&session[..4]));
    let err = failure(&sandbox.ctl(&args), "login with a bad environment");
    assert!(err.contains("AzureMoonCloud"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !sandbox
            .home
            .join(".config/token-broker/config.toml")
            .exists()
    );
}

#[test]
fn waiting_is_one_plain_line_off_a_terminal_and_an_expired_code_says_so() {
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        device_code_lifetime: 2,
        ..Default::default()
    });
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = vec!["login"];
    let session = session_args(&mock);
    args.extend(as_strs(&session));
    let out = sandbox.ctl(&args);
    let err = failure(&out, "a login nobody finishes");
    assert!(err.contains("To sign in, use a web browser"), "{err}");
    assert!(
        err.contains("    Code: "),
        "the code on a line of its own: {err}"
    );
    assert!(
        err.contains("Waiting for you to sign in with the code above..."),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "no spinner or colour off a terminal: {err:?}"
    );
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("the device code expired after 2 s without a sign-in; start the login again"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn on_a_terminal_a_spinner_shows_while_waiting() {
    if !require("script (package util-linux)", on_path("script")) {
        return;
    }
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        device_code_lifetime: 2,
        ..Default::default()
    });
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let command = format!(
        "{} login {}",
        binaries().brokerctl.display(),
        session_args(&mock).join(" ")
    );
    let out = sandbox
        .command(std::path::Path::new("script"))
        .env("TERM", "xterm-256color")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("Waiting for you to sign in with the code above ("),
        "the spinner's line, with the time waited: {shown:?}"
    );
    assert!(shown.contains("\u{1b}[1m"), "the code in bold: {shown:?}");
    assert!(shown.contains("the device code expired"), "{shown:?}");
}

/// Signs `hint` in through the browser flow, the mock signing in whoever the hint names.
fn hinted_browser_login(sandbox: &Sandbox, args: &[String], hint: &str) -> url::Url {
    let mut args = args.to_vec();
    args.extend(["--login-hint".into(), hint.into(), "--no-browser".into()]);
    let mut login = sandbox.start_login(&as_strs(&args));
    let open = login.next_event();
    assert_eq!(open["event"], "open_url", "{open}");
    let url = url::Url::parse(open["url"].as_str().unwrap()).unwrap();
    let (status, page) = browse(url.as_str());
    assert_eq!(status, 200, "{page}");
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    assert_eq!(done["account"], hint);
    assert!(login.finish().0.success());
    url
}

#[test]
fn two_accounts_of_one_tenant_are_two_sessions_side_by_side() {
    use broker_tests::mock_entra::MockUser;
    let mock = fast_mock();
    mock.add_user(MockUser::bob());
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = session_args(&mock);
    args.extend(["--login".into(), "interactive".into()]);

    let url = hinted_browser_login(&sandbox, &args, "alice@contoso.example");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["login_hint"], "alice@contoso.example");
    assert!(
        !query.contains_key("prompt"),
        "Entra fills in the hinted account"
    );
    // Bob's browser comes back where --redirect-url says, as kubelogin's would.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://localhost:{port}/callback");
    let mut bob_args = args.clone();
    bob_args.extend(["--redirect-url".into(), redirect.clone()]);
    let url = hinted_browser_login(&sandbox, &bob_args, "bob@contoso.example");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["redirect_uri"], redirect);

    // Each kube context names its account; each gets its own token, neither asks to sign in.
    for (hint, redirect) in [
        ("alice@contoso.example", None),
        ("bob@contoso.example", Some(&redirect)),
        ("Alice@Contoso.Example", None),
    ] {
        let mut shim_args = args.clone();
        shim_args.extend(["--login-hint".into(), hint.into()]);
        if let Some(redirect) = redirect {
            shim_args.extend(["--redirect-url".into(), redirect.clone()]);
        }
        let cred =
            credential(&sandbox.shim(&as_strs(&shim_args), Some(&exec_info(EXEC_V1, false))));
        let claims = mock
            .verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
            .expect("a token the mock signed");
        assert_eq!(
            claims.upn.as_deref().map(str::to_ascii_lowercase),
            Some(hint.to_ascii_lowercase())
        );
    }
    // The session without a hint is a third one, still signed out.
    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))),
        "shim without a hint",
    );
    assert!(err.contains("brokerctl login"), "{err}");
    let status = sandbox.ctl(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let accounts: Vec<&str> = status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["account"].as_str())
        .collect();
    assert_eq!(accounts.len(), 2, "{status}");
    assert_eq!(mock.requests("authorization_code"), 2);
    assert_no_tokens_in(&daemon.log(), &mock, "brokerd's log");
}

#[test]
fn a_device_code_approved_by_another_account_is_refused_for_a_hinted_session() {
    use broker_tests::mock_entra::MockUser;
    let mock = fast_mock();
    mock.add_user(MockUser::bob());
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = session_args(&mock);
    args.extend(["--login-hint".into(), "alice@contoso.example".into()]);
    let mut login = sandbox.start_login(&as_strs(&args));
    let code = login.next_event();
    assert!(mock.approve_as(code["user_code"].as_str().unwrap(), "bob@contoso.example"));
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("signed in as bob@contoso.example")
            && message.contains("this session is for alice@contoso.example"),
        "{failed}"
    );
    assert_eq!(login.finish().0.code(), Some(1));
    // Bob's tokens were not kept for alice's session.
    let err = failure(
        &sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))),
        "shim",
    );
    assert!(err.contains("brokerctl login"), "{err}");
}
