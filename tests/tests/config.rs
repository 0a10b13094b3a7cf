//! The configuration file: profiles, policy, log level, and hot reload that survives mistakes.

use broker_tests::harness::{
    EXEC_V1, Sandbox, binaries, credential, exec_info, failure, fast_mock, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, MockEntra, TENANT_ID};
use serde_json::Value;

fn status(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap()
}

fn profile(name: &str, mock: &MockEntra) -> String {
    format!(
        "[profiles.{name}]\nserver_id = \"{AKS_SERVER_ID}\"\ntenant_id = \"{TENANT_ID}\"\n\
         authority_host = \"{}\"\nlogin = \"devicecode\"\n",
        mock.authority_host()
    )
}

/// A sandbox whose processes read `config` through TOKEN_BROKER_CONFIG.
fn sandbox_with(config: &str) -> (Sandbox, std::path::PathBuf) {
    let mut sandbox = Sandbox::new();
    let path = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, config).unwrap();
    sandbox.set_env("TOKEN_BROKER_CONFIG", &path);
    (sandbox, path)
}

/// Replaces the file the way editors do: write a new file, rename it over the old one.
fn edit(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `brokerctl login --profile NAME`, approving the device code at the mock.
fn login_profile(sandbox: &Sandbox, mock: &MockEntra, name: &str) -> Value {
    let mut login = sandbox.start_login(&["--profile", name]);
    let code = login.next_event();
    assert_eq!(code["event"], "device_code", "{code}");
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    done
}

#[test]
fn profiles_name_sessions_for_the_shim_and_brokerctl() {
    let mock = fast_mock();
    let (sandbox, path) = sandbox_with(&profile("prod", &mock));
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let st = status(&sandbox);
    assert_eq!(st["config"]["path"], path.to_str().unwrap());
    assert_eq!(st["config"]["profiles"][0], "prod");

    let done = login_profile(&sandbox, &mock, "prod");
    let info = exec_info(EXEC_V1, false);
    let cred = credential(&sandbox.shim(&["--profile", "prod"], Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    // The profile names the same session as the flags it stands for.
    let flags = [
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--authority-host",
        &mock.authority_host(),
    ];
    let by_flags = credential(&sandbox.shim(&flags, Some(&info)));
    assert_eq!(by_flags["status"]["token"], cred["status"]["token"]);
    assert_eq!(status(&sandbox)["sessions"][0]["id"], done["session_id"]);

    let err = failure(
        &sandbox.shim(&["--profile", "nope"], Some(&info)),
        "unknown profile",
    );
    assert!(err.contains("no profile named \"nope\""), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn a_broken_edit_keeps_the_configuration_in_force_and_says_why() {
    let mock = fast_mock();
    let (sandbox, path) = sandbox_with(&profile("prod", &mock));
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    login_profile(&sandbox, &mock, "prod");
    let info = exec_info(EXEC_V1, false);

    daemon.skip_log();
    edit(&path, "[profiles.prod\nserver_id = ");
    daemon.wait_for_log("configuration NOT reloaded");
    let st = status(&sandbox);
    let error = st["config"]["error"]
        .as_str()
        .expect("the error is reported");
    assert!(error.contains(path.to_str().unwrap()), "{error}");
    assert!(!error.contains('\n'), "{error}");
    // The previous configuration, with its profile, is still in force.
    success(&sandbox.shim(&["--profile", "prod"], Some(&info)), "shim");
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(text.contains("NOT reloaded"), "{text}");

    // An out-of-range value is refused the same way.
    edit(
        &path,
        &format!("{}[refresh]\njitter = 3.0\n", profile("prod", &mock)),
    );
    daemon.wait_for_log("configuration NOT reloaded");
    assert!(
        status(&sandbox)["config"]["error"]
            .as_str()
            .unwrap()
            .contains("refresh.jitter")
    );

    // A good edit takes over and clears the error.
    edit(
        &path,
        &format!("{}{}", profile("prod", &mock), profile("staging", &mock)),
    );
    daemon.wait_for_log("configuration reloaded");
    let st = status(&sandbox);
    assert!(st["config"]["error"].is_null(), "{st}");
    assert_eq!(st["config"]["profiles"][1], "staging");
}

#[test]
fn policy_and_log_level_changes_apply_without_a_restart_and_sighup_reloads() {
    let mock = fast_mock();
    let (sandbox, path) = sandbox_with(&profile("prod", &mock));
    // No RUST_LOG: the configuration's log_level decides.
    let daemon = sandbox.start_daemon_logging(&["--store", "memory"], "");
    login_profile(&sandbox, &mock, "prod");
    let info = exec_info(EXEC_V1, false);
    success(&sandbox.shim(&["--profile", "prod"], Some(&info)), "shim");
    assert_eq!(mock.requests("refresh_token"), 0);

    // Ask for an hour of headroom: the one-hour token no longer has that, so the next
    // request refreshes first.
    daemon.skip_log();
    edit(
        &path,
        &format!(
            "log_level = \"debug\"\n[refresh]\nmin_remaining = \"60m\"\nexpiry_margin = \"1m\"\n{}",
            profile("prod", &mock)
        ),
    );
    daemon.wait_for_log("log level is now debug");
    success(&sandbox.shim(&["--profile", "prod"], Some(&info)), "shim");
    assert_eq!(mock.requests("refresh_token"), 1);

    // SIGHUP reloads too (here, with nothing changed).
    daemon.skip_log();
    daemon.signal(rustix::process::Signal::HUP);
    daemon.wait_for_log("SIGHUP");
    daemon.wait_for_log("configuration reloaded");
}

#[test]
fn an_invalid_configuration_at_start_is_a_one_line_error() {
    let (sandbox, path) = sandbox_with("[refresh]\nmax_concurrent = 0\n");
    let out = sandbox
        .command(&binaries().brokerd)
        .args(["--store", "memory"])
        .output()
        .unwrap();
    let err = failure(&out, "brokerd with a bad configuration");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("refresh.max_concurrent"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A fresh install: no configuration directory when brokerd starts (the documented default
/// place, no TOKEN_BROKER_CONFIG). `brokerctl login --profile X …` creates it, and the shim
/// finds profile X right after, however quickly it asks. Nothing alarming is logged.
#[test]
fn a_profile_saved_on_a_fresh_install_is_found_at_once() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let config_dir = sandbox.home.join(".config/token-broker");
    assert!(!config_dir.exists());
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let started = daemon.wait_for_log("watching");
    assert!(
        started.contains("until") && started.contains("appears"),
        "{started}"
    );
    assert!(!daemon.log().contains("cannot watch"), "{}", daemon.log());

    let host = mock.authority_host();
    let mut login = sandbox.start_login(&[
        "--profile",
        "work",
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--authority-host",
        &host,
    ]);
    let code = login.next_event();
    assert!(mock.approve(code["user_code"].as_str().unwrap()));
    assert_eq!(login.next_event()["event"], "logged_in");
    assert!(config_dir.join("config.toml").exists());

    let cred = credential(&sandbox.shim(&["--profile", "work"], Some(&exec_info(EXEC_V1, false))));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
    // And the watch moved to the new directory, for edits from now on.
    daemon.wait_for_log("for changes");
}
