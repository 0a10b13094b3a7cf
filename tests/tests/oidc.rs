//! Any OpenID Connect issuer, end to end through real kubectl: the mock's generic mode (a
//! Keycloak-shaped realm, its issuer with a path, strict refresh-token rotation with reuse
//! detection, a revocation endpoint) and an API server stand-in running Kubernetes' OIDC
//! authenticator for that issuer.

use broker_tests::apiserver::FakeApiServer;
use broker_tests::harness::{
    CtlRun, KubeUser, Sandbox, as_strs, assert_no_tokens_in, browse, failure, fast_mock, on_path,
    require, success,
};
use broker_tests::mock_entra::MockEntra;

const CLIENT: &str = "kubernetes";

fn kubectl_available() -> bool {
    require("kubectl", on_path("kubectl"))
}

/// A realm with strict rotation, and a cluster trusting its ID tokens for `CLIENT`.
fn issuer_and_cluster() -> (MockEntra, String, FakeApiServer) {
    let mock = fast_mock();
    let issuer = mock.add_realm("dev", CLIENT);
    mock.set_strict_rotation(true);
    let api = FakeApiServer::start_oidc(mock.shared_state(), &issuer, CLIENT);
    (mock, issuer, api)
}

/// int128/kubelogin's `get-token` flags, as a kubeconfig made for it carries them.
fn int128_args(issuer: &str, grant_type: &str) -> Vec<String> {
    vec![
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={CLIENT}"),
        "--oidc-extra-scope=email".into(),
        format!("--grant-type={grant_type}"),
        "--token-cache-dir=/nonexistent/ignored".into(),
    ]
}

fn last_request(api: &FakeApiServer) -> (bool, String) {
    let seen = api.requests();
    let last = seen.last().expect("a request reached the API server");
    (last.authorized, last.subject.clone().unwrap_or_default())
}

/// The session id `brokerctl status` shows for the one session.
fn only_session(sandbox: &Sandbox) -> String {
    let out = sandbox.ctl(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions = status["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{status}");
    sessions[0]["id"].as_str().unwrap().to_string()
}

/// `brokerctl login` at `issuer` with a device code, asking for `openid email`, plus `extra`.
fn start_device_login(sandbox: &Sandbox, issuer: &str, extra: &[&str]) -> CtlRun {
    let mut args = vec![
        "--oidc-issuer-url",
        issuer,
        "--client-id",
        CLIENT,
        "--oidc-extra-scope",
        "email",
        "--login",
        "devicecode",
    ];
    args.extend_from_slice(extra);
    sandbox.start_login(&args)
}

/// Approves at the mock the device code `login` shows.
fn approve(login: &mut CtlRun, mock: &MockEntra) {
    let code = login.next_event();
    assert_eq!(code["event"], "device_code", "{code}");
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
}

/// A whole device code sign-in at `issuer`, approved at the mock: the `logged_in` event, and
/// what brokerctl said on stderr.
fn sign_in(
    sandbox: &Sandbox,
    mock: &MockEntra,
    issuer: &str,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let mut login = start_device_login(sandbox, issuer, extra);
    approve(&mut login, mock);
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    let (status, stderr) = login.finish();
    assert!(status.success(), "{stderr}");
    (done, stderr)
}

#[test]
fn a_generic_issuer_with_device_code_refresh_under_reuse_detection_and_a_revoking_logout() {
    if !kubectl_available() {
        return;
    }
    let (mock, issuer, api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let config = sandbox.kubeconfig(
        &api,
        &[KubeUser::new("oidc", int128_args(&issuer, "device-code"))],
    );

    // Nobody signed in: kubectl without a terminal is told the command.
    let err = failure(
        &sandbox.kubectl_get_api(&config, "oidc", &[]),
        "kubectl before a login",
    );
    assert!(
        err.contains("brokerctl login --oidc-issuer-url") && err.contains("--login devicecode"),
        "{err}"
    );

    let mut login = sandbox.start_login(&[
        "--oidc-issuer-url",
        &issuer,
        "--oidc-client-id",
        CLIENT,
        "--oidc-extra-scope",
        "email",
        "--login",
        "devicecode",
    ]);
    let code = login.next_event();
    assert_eq!(code["event"], "device_code", "{code}");
    assert!(
        code["verification_uri"]
            .as_str()
            .unwrap()
            .starts_with(&issuer),
        "{code}"
    );
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    assert_eq!(done["account"], "alice@contoso.example");
    assert!(login.finish().0.success());
    assert!(mock.requests("discovery") >= 1);

    for _ in 0..2 {
        success(&sandbox.kubectl_get_api(&config, "oidc", &[]), "kubectl");
        assert_eq!(
            last_request(&api),
            (true, "alice@contoso.example".to_string()),
            "the cluster took the ID token"
        );
    }

    // Refreshes under strict rotation: each uses the newest refresh token, none is reused.
    let session = only_session(&sandbox);
    for _ in 0..3 {
        success(&sandbox.ctl(&["refresh", &session]), "brokerctl refresh");
    }
    assert_eq!(mock.requests("refresh_token"), 3);
    assert_eq!(
        mock.requests("refresh_token_reused"),
        0,
        "a used refresh token was presented again"
    );
    success(
        &sandbox.kubectl_get_api(&config, "oidc", &[]),
        "kubectl after refreshes",
    );
    assert!(last_request(&api).0);

    // Logout revokes at the issuer: the refresh token brokerd held is worth nothing now.
    let newest = mock.issued_refresh_tokens().last().cloned().unwrap();
    success(&sandbox.ctl(&["logout", &session]), "brokerctl logout");
    assert_eq!(mock.requests("revoke"), 1);
    let token_endpoint = format!("{issuer}/protocol/openid-connect/token");
    let answer = post_form(
        &token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("refresh_token", &newest),
        ],
    );
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(answer.1.contains("invalid_grant"), "{}", answer.1);
    assert_no_tokens_in(&daemon.log(), &mock, "brokerd's log");
}

/// A form POST, its status and body whatever the status.
fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .send_form(form.iter().copied())
        .expect("the issuer answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn a_generic_issuer_with_the_browser_flow_and_its_extra_parameters() {
    if !kubectl_available() {
        return;
    }
    let (mock, issuer, api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = int128_args(&issuer, "authcode");
    args.push("--oidc-auth-request-extra-params=kc_idp_hint=corp".into());
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("oidc", args)]);

    let mut login = sandbox.start_login(&as_strs(&[
        "--oidc-issuer-url".into(),
        issuer.clone(),
        "--client-id".into(),
        CLIENT.into(),
        "--oidc-extra-scope".into(),
        "email".into(),
        "--oidc-auth-request-extra-params".into(),
        "kc_idp_hint=corp".into(),
        "--login".into(),
        "interactive".into(),
        "--no-browser".into(),
    ]));
    let open = login.next_event();
    assert_eq!(open["event"], "open_url", "{open}");
    let url = url::Url::parse(open["url"].as_str().unwrap()).unwrap();
    assert!(
        url.as_str()
            .starts_with(&format!("{issuer}/protocol/openid-connect/auth"))
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["kc_idp_hint"], "corp");
    assert_eq!(query["scope"], "openid email");
    assert_eq!(query["code_challenge_method"], "S256");
    let (status, page) = browse(url.as_str());
    assert_eq!(status, 200, "{page}");
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    assert!(login.finish().0.success());

    success(&sandbox.kubectl_get_api(&config, "oidc", &[]), "kubectl");
    assert_eq!(
        last_request(&api),
        (true, "alice@contoso.example".to_string())
    );
    assert_eq!(mock.requests("authorization_code"), 1);

    // doctor reaches the issuer through its own discovery document.
    let doctor = sandbox.ctl(&["doctor", "--output", "json"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains(&format!("{issuer} answered in")), "{text}");
}

#[test]
fn a_refresh_answer_without_an_id_token_asks_for_a_new_sign_in() {
    let (mock, issuer, _api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    sign_in(&sandbox, &mock, &issuer, &[]);
    mock.set_omit_id_token_on_refresh(true);
    let session = only_session(&sandbox);
    let err = failure(&sandbox.ctl(&["refresh", &session]), "refresh");
    assert!(err.contains("no id_token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn int128_kubeconfigs_convert_for_any_issuer_and_then_work() {
    if !kubectl_available() {
        return;
    }
    let (mock, issuer, api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    // What int128/kubelogin's setup writes: `kubectl oidc-login get-token …`.
    let config = sandbox.kubeconfig(
        &api,
        &[KubeUser::new("oidc", int128_args(&issuer, "device-code"))],
    );
    let shim = broker_tests::harness::binaries().shim.display().to_string();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        &format!("command: {shim}\n      args: [\"get-token\", "),
        "command: kubectl\n      args: [\"oidc-login\", \"get-token\", ",
        1,
    );
    assert!(text.contains("oidc-login"), "{text}");
    std::fs::write(&config, &text).unwrap();

    let out = sandbox.ctl(&[
        "kubeconfig",
        "convert",
        "--kubeconfig",
        config.to_str().unwrap(),
        "--shim",
        &shim,
    ]);
    success(&out, "brokerctl kubeconfig convert");
    let converted = std::fs::read_to_string(&config).unwrap();
    assert!(!converted.contains("oidc-login"), "{converted}");
    assert!(converted.contains("--oidc-issuer-url"), "{converted}");

    sign_in(&sandbox, &mock, &issuer, &[]);
    success(&sandbox.kubectl_get_api(&config, "oidc", &[]), "kubectl");
    assert_eq!(
        last_request(&api),
        (true, "alice@contoso.example".to_string())
    );
}

#[test]
fn a_client_that_needs_its_secret_even_with_pkce_keeps_it_in_the_keyring_not_the_kubeconfig() {
    if !kubectl_available() {
        return;
    }
    // Google's installed-app clients: the secret goes with every grant, PKCE or not.
    let secret = "GOCSPX-installed-app-secret_0123";
    let mock = fast_mock();
    let issuer = mock.add_confidential_realm("google", CLIENT, secret);
    let api = FakeApiServer::start_oidc(mock.shared_state(), &issuer, CLIENT);
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);

    // Without the secret the issuer refuses the grant, in one line.
    let mut login = start_device_login(&sandbox, &issuer, &[]);
    approve(&mut login, &mock);
    let failed = login.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("client_secret is missing"),
        "{failed}"
    );
    login.finish();

    // int128/kubelogin's kubeconfig carries it; convert moves it into brokerd's store.
    let mut args = int128_args(&issuer, "device-code");
    args.push(format!("--oidc-client-secret={secret}"));
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("oidc", args)]);
    let shim = broker_tests::harness::binaries().shim.display().to_string();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &format!("command: {shim}\n      args: [\"get-token\", "),
        "command: kubectl\n      args: [\"oidc-login\", \"get-token\", ",
        1,
    );
    std::fs::write(&config, &text).unwrap();
    success(
        &sandbox.ctl(&[
            "kubeconfig",
            "convert",
            "--kubeconfig",
            config.to_str().unwrap(),
            "--shim",
            &shim,
            "--allow-memory-store",
        ]),
        "brokerctl kubeconfig convert",
    );
    let converted = std::fs::read_to_string(&config).unwrap();
    assert!(!converted.contains(secret), "{converted}");

    // The sign-in, the kubectl runs and the refreshes all carry the kept secret.
    sign_in(&sandbox, &mock, &issuer, &[]);
    success(&sandbox.kubectl_get_api(&config, "oidc", &[]), "kubectl");
    assert_eq!(
        last_request(&api),
        (true, "alice@contoso.example".to_string())
    );
    let session = only_session(&sandbox);
    success(&sandbox.ctl(&["refresh", &session]), "brokerctl refresh");
    let found = sandbox.files_containing(secret);
    assert!(found.is_empty(), "the secret is in {found:?}");
    assert!(!daemon.log().contains(secret));
}

#[test]
fn a_dex_shaped_issuer_without_a_revocation_endpoint() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let issuer = mock.add_realm(broker_tests::mock_entra::DEX, CLIENT);
    assert!(issuer.ends_with("/dex"), "{issuer}");
    let api = FakeApiServer::start_oidc(mock.shared_state(), &issuer, CLIENT);
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = int128_args(&issuer, "device-code");
    args.push("--oidc-extra-scope=offline_access".into());
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("dex", args)]);
    sign_in(
        &sandbox,
        &mock,
        &issuer,
        &["--oidc-extra-scope", "offline_access"],
    );
    success(&sandbox.kubectl_get_api(&config, "dex", &[]), "kubectl");
    assert_eq!(
        last_request(&api),
        (true, "alice@contoso.example".to_string())
    );
    // No revocation endpoint: the logout is local, and nothing is asked of the issuer.
    let session = only_session(&sandbox);
    success(&sandbox.ctl(&["logout", &session]), "brokerctl logout");
    assert_eq!(mock.requests("revoke"), 0);
    let err = failure(
        &sandbox.kubectl_get_api(&config, "dex", &[]),
        "kubectl after logout",
    );
    assert!(err.contains("brokerctl login"), "{err}");
}

#[test]
fn at_a_terminal_the_shim_signs_in_with_the_kubeconfig_s_browser_command() {
    if !require("curl (the stand-in browser)", on_path("curl")) {
        return;
    }
    let (mock, issuer, _api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let opened = sandbox.root().join("opened");
    let browser = sandbox.script(
        "idp-browser",
        &format!(
            "echo \"$1\" > {}\nexec curl -fsSL -o /dev/null \"$1\"",
            opened.display()
        ),
    );
    let out = sandbox
        .command(&broker_tests::harness::binaries().shim)
        .arg("get-token")
        .args(int128_args(&issuer, "authcode"))
        .arg(format!("--browser-command={}", browser.display()))
        .env(
            "KUBERNETES_EXEC_INFO",
            broker_tests::harness::exec_info(broker_tests::harness::EXEC_V1, true),
        )
        // Not this one: the kubeconfig names its own.
        .env("BROWSER", "/bin/false")
        .output()
        .unwrap();
    let cred = broker_tests::harness::credential(&out);
    assert!(cred["status"]["token"].as_str().is_some());
    let url = std::fs::read_to_string(&opened).unwrap();
    assert!(
        url.starts_with(&format!("{issuer}/protocol/openid-connect/auth?")),
        "{url}"
    );
    assert_eq!(mock.requests("authorization_code"), 1);
}

#[test]
fn an_issuer_behind_a_private_certificate_authority() {
    if !kubectl_available() {
        return;
    }
    let mock = MockEntra::start_https(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        ..Default::default()
    });
    let issuer = mock.add_realm("corp", CLIENT);
    assert!(issuer.starts_with("https://"), "{issuer}");
    let api = FakeApiServer::start_oidc(mock.shared_state(), &issuer, CLIENT);
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let ca = sandbox.root().join("corp-ca.pem");
    std::fs::write(&ca, mock.ca_pem().unwrap()).unwrap();
    let ca = ca.display().to_string();

    // Without the CA, the issuer's certificate is not trusted: one line, nothing sent.
    let mut refused = start_device_login(&sandbox, &issuer, &[]);
    let failed = refused.next_event();
    assert_eq!(failed["event"], "failed", "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains("certificate"),
        "{failed}"
    );
    refused.finish();
    assert_eq!(mock.requests("devicecode"), 0);

    // Saved as a profile too: the CA file is not part of it, and the login says so.
    let (_, stderr) = sign_in(
        &sandbox,
        &mock,
        &issuer,
        &["--certificate-authority", &ca, "--profile", "corp"],
    );
    assert!(
        stderr.contains("certificate authority is not part of profile corp"),
        "{stderr}"
    );

    let mut args = int128_args(&issuer, "device-code");
    args.push(format!("--certificate-authority={ca}"));
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("corp", args)]);
    success(&sandbox.kubectl_get_api(&config, "corp", &[]), "kubectl");
    assert_eq!(
        last_request(&api),
        (true, "alice@contoso.example".to_string())
    );
    let session = only_session(&sandbox);
    success(
        &sandbox.ctl(&["refresh", &session]),
        "a refresh through the private CA",
    );
}

/// `brokerctl login --profile NAME` with an issuer's flags saves them as a profile; the name
/// alone then serves kubectl the issuer's ID token, from the session the flags name.
#[test]
fn a_profile_holds_an_issuer_s_flags_and_its_name_alone_serves_kubectl() {
    if !kubectl_available() {
        return;
    }
    let (mock, issuer, api) = issuer_and_cluster();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let (done, stderr) = sign_in(&sandbox, &mock, &issuer, &["--profile", "dev"]);
    assert!(stderr.contains("Saved profile dev in"), "{stderr}");
    let text =
        std::fs::read_to_string(sandbox.home.join(".config/token-broker/config.toml")).unwrap();
    assert!(
        text.contains(&format!("oidc_issuer_url = \"{issuer}\"")),
        "{text}"
    );
    assert!(text.contains(r#"oidc_extra_scopes = ["email"]"#), "{text}");

    daemon.wait_for_log("configuration reloaded");
    let config = sandbox.kubeconfig(
        &api,
        &[
            KubeUser::new("by-profile", vec!["--profile".into(), "dev".into()]),
            KubeUser::new("by-flags", int128_args(&issuer, "device-code")),
        ],
    );
    for user in ["by-profile", "by-flags"] {
        success(&sandbox.kubectl_get_api(&config, user, &[]), user);
        assert_eq!(
            last_request(&api),
            (true, "alice@contoso.example".to_string()),
            "the cluster took the ID token ({user})"
        );
    }
    assert_eq!(only_session(&sandbox), done["session_id"].as_str().unwrap());
    assert_no_tokens_in(&text, &mock, "the configuration file");
}
