//! `brokerctl doctor`: each check passes on a healthy setup, and fails (or warns) with the right
//! fix when what it checks is broken.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use broker_tests::harness::{
    KeyringSetup, Sandbox, SecretService, binaries, failure, fast_mock, require, session_args,
};
use broker_tests::mock_entra::MockEntra;
use serde_json::Value;

/// Runs `brokerctl doctor -o json` against the mock; its exit code and report.
fn doctor(sandbox: &Sandbox, mock: &MockEntra) -> (i32, Value) {
    let output = sandbox.ctl(&[
        "doctor",
        "-o",
        "json",
        "--authority-host",
        &mock.authority_host(),
    ]);
    report(&output)
}

fn report(output: &Output) -> (i32, Value) {
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("exit code"), report)
}

/// The first check with `id`.
fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} check in {report:#}"))
}

/// Asserts that check `id` has `level`, that its summary says `says` and that its fix (when
/// not a pass) says `fix`.
fn expect(report: &Value, id: &str, level: &str, says: &str, fix: &str) {
    let found = check(report, id);
    assert_eq!(found["level"], level, "{id}: {found:#}");
    let summary = found["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(says), "{id} summary: {summary}");
    if level == "pass" {
        assert!(found["fix"].is_null(), "{id}: {found:#}");
    } else {
        let text = found["fix"].as_str().unwrap_or_default();
        assert!(text.contains(fix), "{id} fix: {text}");
    }
}

fn install_user_service(sandbox: &Sandbox, enable: bool) {
    let units = sandbox.home.join(".config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    let unit = units.join("token-broker.service");
    std::fs::write(&unit, "[Service]\nExecStart=brokerd\n").unwrap();
    if enable {
        let wants = units.join("default.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(&unit, wants.join("token-broker.service")).unwrap();
    }
}

fn keyring_available() -> bool {
    require(
        "D-Bus and gnome-keyring (packages dbus, gnome-keyring, libsecret-tools)",
        SecretService::available(),
    )
}

#[test]
fn a_healthy_setup_passes_every_check() {
    if !keyring_available() {
        return;
    }
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let _keyring = SecretService::start(&mut sandbox);
    let _daemon = sandbox.start_daemon(&[]);
    install_user_service(&sandbox, true);
    let kubeconfig = sandbox.home.join(".kube/config");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    let args: Vec<String> = session_args(&mock)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: aks\n  user:\n    exec:\n      \
             apiVersion: client.authentication.k8s.io/v1\n      command: broker-shim\n      \
             args: [get-token, {}]\n",
            args.join(", ")
        ),
    )
    .unwrap();

    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["result"], "pass");
    let version = env!("CARGO_PKG_VERSION");
    expect(&report, "daemon", "pass", &format!("brokerd {version}"), "");
    expect(&report, "socket_dir", "pass", "is private", "");
    expect(&report, "keyring", "pass", "unlocked and kept on disk", "");
    expect(
        &report,
        "secret_store",
        "pass",
        "stored, read back and removed",
        "",
    );
    // brokerd's memory is out of reach of core files and debuggers, and the kernel agrees.
    expect(
        &report,
        "process_protection",
        "pass",
        "no core dumps, no debugger attach",
        "",
    );
    let pid = sandbox.serving_pid().expect("brokerd runs");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit");
    assert!(
        core.split_whitespace().skip(4).take(2).all(|v| v == "0"),
        "{core}"
    );
    expect(&report, "proxy", "pass", "connects directly", "");
    expect(&report, "trust_store", "pass", "", "");
    expect(
        &report,
        "idp",
        "pass",
        mock.authority_host().trim_end_matches('/'),
        "",
    );
    expect(&report, "clock", "pass", "within", "");
    expect(
        &report,
        "user_service",
        "pass",
        "token-broker.service is enabled",
        "",
    );
    expect(&report, "kubeconfig", "pass", "1 user(s)", "");
    expect(&report, "session_index", "pass", "is up to date", "");
    assert_eq!(
        SecretService::lookup(&sandbox, "doctor-probe"),
        None,
        "the test secret is removed"
    );

    let text = sandbox.ctl(&["doctor", "--authority-host", &mock.authority_host()]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{stdout}");
    // The text report counts the same checks as the JSON one.
    let checks = report["checks"].as_array().expect("checks").len();
    assert!(
        stdout.contains(&format!("All {checks} checks passed.")),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no colour when not on a terminal"
    );
}

#[test]
fn without_brokerd_the_daemon_check_fails_with_how_to_start_it() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    assert_eq!(report["result"], "fail");
    expect(
        &report,
        "daemon",
        "fail",
        "brokerd is not running",
        "brokerctl service install",
    );
    // The other checks still ran, from brokerctl.
    expect(&report, "idp", "pass", "answered", "");
}

#[test]
fn an_open_socket_directory_fails_with_the_chmod_that_closes_it() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let dir = sandbox.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    expect(
        &report,
        "socket_dir",
        "fail",
        "mode 0755",
        &format!("chmod 700 {}", dir.display()),
    );
}

#[test]
fn the_memory_store_is_a_warning() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["result"], "warn");
    expect(
        &report,
        "secret_store",
        "warn",
        "in memory",
        "without `--store memory`",
    );
}

/// Starts brokerd on the Secret Service in `setup`, and returns doctor's keyring check.
fn keyring_check(setup: KeyringSetup, after: impl FnOnce(&SecretService, &Sandbox)) -> Value {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let keyring = SecretService::start_with(&mut sandbox, setup);
    after(&keyring, &sandbox);
    let _daemon = sandbox.start_daemon(&["--store", "secret-service"]);
    let (code, report) = doctor(&sandbox, &mock);
    assert!(code >= 1, "{report:#}");
    check(&report, "keyring").clone()
}

#[test]
fn no_secret_service_on_the_bus_fails() {
    if !keyring_available() {
        return;
    }
    let found = keyring_check(KeyringSetup::BusOnly, |_, _| {});
    assert_eq!(found["level"], "fail", "{found:#}");
    assert!(
        found["summary"]
            .as_str()
            .unwrap()
            .contains("no Secret Service provider on the D-Bus session bus"),
        "{found:#}"
    );
    assert!(found["fix"].as_str().unwrap().contains("gnome-keyring"));
}

#[test]
fn no_session_bus_fails() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let nowhere = sandbox.root().join("no-bus-here");
    sandbox.set_env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", nowhere.display()),
    );
    let _daemon = sandbox.start_daemon(&["--store", "secret-service"]);
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    expect(
        &report,
        "keyring",
        "fail",
        "no D-Bus session bus",
        "dbus-run-session",
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "secret_store"),
        "no round trip through a keyring that is not there: {report:#}"
    );
}

#[test]
fn no_default_collection_fails_as_on_wsl() {
    if !keyring_available() {
        return;
    }
    let found = keyring_check(KeyringSetup::NoDefaultCollection, |_, _| {});
    assert_eq!(found["level"], "fail", "{found:#}");
    assert!(
        found["summary"]
            .as_str()
            .unwrap()
            .contains("no default collection (as on WSL)"),
        "{found:#}"
    );
    assert!(found["fix"].as_str().unwrap().contains("Set as default"));
}

#[test]
fn a_locked_keyring_fails() {
    if !keyring_available() {
        return;
    }
    let found = keyring_check(KeyringSetup::Unlocked, |keyring, sandbox| {
        keyring.lock_login_keyring(sandbox)
    });
    assert_eq!(found["level"], "fail", "{found:#}");
    assert!(
        found["summary"].as_str().unwrap().contains("is locked"),
        "{found:#}"
    );
    assert!(found["fix"].as_str().unwrap().contains("unlock it"));
}

#[test]
fn a_keyring_that_does_not_survive_a_reboot_warns() {
    if !keyring_available() {
        return;
    }
    let found = keyring_check(KeyringSetup::Unlocked, |keyring, sandbox| {
        keyring.make_session_collection_default(sandbox)
    });
    assert_eq!(found["level"], "warn", "{found:#}");
    assert!(
        found["summary"]
            .as_str()
            .unwrap()
            .contains("will not survive a reboot"),
        "{found:#}"
    );
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_proxy_that_does_not_lead_to_the_idp_fails_and_its_password_stays_hidden() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let proxy = format!("http://alice:hunter2@127.0.0.1:{}", closed_port());
    sandbox.set_env("HTTP_PROXY", &proxy);
    sandbox.set_env("HTTPS_PROXY", &proxy);
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let output = sandbox.ctl(&[
        "doctor",
        "-o",
        "json",
        "--authority-host",
        &mock.authority_host(),
    ]);
    let (code, report) = report(&output);
    assert_eq!(code, 2);
    expect(
        &report,
        "proxy",
        "pass",
        "HTTPS_PROXY=http://alice:***@127.0.0.1",
        "",
    );
    expect(&report, "idp", "fail", "cannot reach", "proxy");
    for text in [
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        daemon.log(),
    ] {
        assert!(
            !text.contains("hunter2"),
            "the proxy password leaked: {text}"
        );
    }
}

#[test]
fn a_proxy_variable_that_is_not_a_url_fails() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    sandbox.set_env("https_proxy", "http://:3128");
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    expect(
        &report,
        "proxy",
        "fail",
        "https_proxy is not a proxy URL",
        "http://HOST:PORT",
    );
}

#[test]
fn a_missing_trust_store_file_fails() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    let missing = sandbox.root().join("corporate-ca.pem");
    sandbox.set_env("SSL_CERT_FILE", &missing);
    // brokerd cannot make HTTPS calls this way, and says so rather than starting half-working.
    let refused = sandbox
        .command(&binaries().brokerd)
        .args(["--store", "memory"])
        .output()
        .unwrap();
    let err = failure(&refused, "brokerd with a missing SSL_CERT_FILE");
    assert!(err.contains("cannot set up the HTTPS client"), "{err}");
    assert!(err.contains("SSL_CERT_FILE="), "{err}");
    // doctor checks the same environment itself and names the culprit.
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    expect(
        &report,
        "daemon",
        "fail",
        "not running",
        "brokerctl service install",
    );
    expect(
        &report,
        "trust_store",
        "fail",
        &format!("SSL_CERT_FILE={} cannot be read", missing.display()),
        "PEM bundle",
    );
}

#[test]
fn an_unreachable_identity_provider_fails() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let authority = format!("http://127.0.0.1:{}/", closed_port());
    let (code, report) =
        report(&sandbox.ctl(&["doctor", "-o", "json", "--authority-host", &authority]));
    assert_eq!(code, 2);
    expect(&report, "idp", "fail", "cannot reach 127.0.0.1", "network");
}

#[test]
fn clock_skew_against_the_idp_warns_then_fails() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    daemon.advance_clock(90);
    let (_, report) = doctor(&sandbox, &mock);
    expect(&report, "clock", "warn", "ahead of", "set-ntp");
    daemon.advance_clock(510);
    let (code, report) = doctor(&sandbox, &mock);
    assert_eq!(code, 2);
    expect(&report, "clock", "fail", "about 10 min ahead of", "set-ntp");
    daemon.advance_clock(-1200);
    let (_, report) = doctor(&sandbox, &mock);
    expect(&report, "clock", "fail", "about 10 min behind", "set-ntp");
}

#[test]
fn the_user_service_must_be_installed_and_enabled() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let (_, report) = doctor(&sandbox, &mock);
    expect(
        &report,
        "user_service",
        "warn",
        "not installed as a systemd user service",
        "brokerctl service install",
    );
    install_user_service(&sandbox, false);
    let (_, report) = doctor(&sandbox, &mock);
    expect(
        &report,
        "user_service",
        "warn",
        "installed but not enabled",
        "systemctl --user enable --now token-broker.socket",
    );
    install_user_service(&sandbox, true);
    let (_, report) = doctor(&sandbox, &mock);
    expect(&report, "user_service", "pass", "is enabled", "");
}

#[test]
fn kubeconfig_users_still_on_kubelogin_are_pointed_at_convert() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let kubeconfig = sandbox.home.join(".kube/config");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: clusterUser_rg_aks\n  user:\n    exec:\n      \
             apiVersion: client.authentication.k8s.io/v1beta1\n      command: kubelogin\n      \
             args: [get-token, --login, devicecode, --server-id, 6dae42f8-4368-4678-94ff-3960e28e3630, \
             --client-id, 80faf920-1908-4b52-b5ef-a8e7bedfc67a, --tenant-id, {}, --environment, \
             AzurePublicCloud]\n",
            broker_tests::mock_entra::TENANT_ID
        ),
    )
    .unwrap();
    let (code, report) = doctor(&sandbox, &mock);
    assert!(code >= 1);
    expect(
        &report,
        "kubeconfig",
        "warn",
        "clusterUser_rg_aks (kubelogin get-token)",
        "brokerctl kubeconfig convert",
    );
    let converted = sandbox.ctl(&["kubeconfig", "convert"]);
    assert!(converted.status.success(), "{converted:?}");
    let (_, report) = doctor(&sandbox, &mock);
    expect(&report, "kubeconfig", "pass", "1 user(s) of", "");
}
