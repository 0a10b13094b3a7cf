//! Sign-ins that GUIs and background tools need (Lens, k9s, an IDE, a cron job): they have no
//! terminal, so nobody can be prompted there. One pending login per session, one desktop
//! notification for it (to a stand-in notification service on a private session bus), no
//! browser ever started for them, and `brokerctl login` with no arguments to finish it.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use broker_tests::harness::notifications::NotificationService;
use broker_tests::harness::{
    EXEC_V1, KeyringSetup, Sandbox, SecretService, as_strs, credential, exec_info, fast_mock,
    on_path, require, session_args, success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, MockEntra};
use serde_json::Value;

fn bus_available() -> bool {
    require(
        "dbus-daemon (package dbus)",
        on_path("dbus-daemon") && on_path("dbus-send"),
    )
}

/// A sandbox with a session bus that has only the stand-in notification service on it, and a
/// `$BROWSER` that writes down whenever it is started.
struct Desktop {
    sandbox: Sandbox,
    _bus: SecretService,
    notices: NotificationService,
    browser_calls: std::path::PathBuf,
}

fn desktop() -> Desktop {
    let mut sandbox = Sandbox::new();
    let bus = SecretService::start_with(&mut sandbox, KeyringSetup::BusOnly);
    let notices = NotificationService::start(&bus.address);
    let browser_calls = sandbox.root().join("browser-calls");
    let browser = sandbox.script(
        "fake-browser",
        &format!("echo \"$@\" >> {}", browser_calls.display()),
    );
    sandbox.set_env("BROWSER", browser);
    Desktop {
        sandbox,
        _bus: bus,
        notices,
        browser_calls,
    }
}

fn interactive_session(mock: &MockEntra) -> Vec<String> {
    let mut args = session_args(mock);
    args.extend(["--login".into(), "interactive".into()]);
    args
}

/// `count` shims at once, as kubectl runs them without a terminal; each one's stderr.
fn callers_without_a_terminal(sandbox: &Sandbox, args: &[String], count: usize) -> Vec<String> {
    let info = exec_info(EXEC_V1, false);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| sandbox.shim(&as_strs(args), Some(&info))))
            .collect();
        runs.into_iter()
            .map(|run| {
                let output = run.join().expect("the shim ran");
                assert!(!output.status.success());
                String::from_utf8_lossy(&output.stderr).into_owned()
            })
            .collect()
    })
}

fn status(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap()
}

/// How many notifications the service holds once `expected` have arrived (or 20 s have
/// passed), and a second more in which another would have: brokerd sends one as soon as the
/// first caller is refused.
fn settled_notifications(notices: &NotificationService, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    while notices.received().len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    notices.received().len()
}

#[test]
fn fifty_callers_without_a_terminal_raise_one_notification_and_start_no_browser() {
    if !bus_available() {
        return;
    }
    let mock = fast_mock();
    let desktop = desktop();
    let sandbox = &desktop.sandbox;
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let args = interactive_session(&mock);

    let said = callers_without_a_terminal(sandbox, &args, 50);
    for line in &said {
        assert!(line.contains("run: brokerctl login"), "{line}");
        assert_eq!(line.trim().lines().count(), 1, "{line}");
    }
    assert_eq!(settled_notifications(&desktop.notices, 1), 1);
    let notice = &desktop.notices.received()[0];
    assert_eq!(notice.app_name, "token-broker");
    assert!(notice.summary.contains("sign in"), "{notice:?}");
    assert!(
        notice.body.contains("brokerctl login --server-id 6dae42f8")
            && notice.body.contains("--login interactive"),
        "{notice:?}"
    );
    assert!(
        !desktop.browser_calls.exists(),
        "a browser was started for a caller without a terminal"
    );
    assert_eq!(mock.requests("authorize"), 0);

    let pending = status(sandbox)["pending_logins"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["callers"], 50);
    assert_eq!(pending[0]["notified"], true);
    let text = success(&sandbox.ctl(&["status"]), "status");
    assert!(
        text.contains("Waiting for a sign-in (50 program(s)"),
        "{text}"
    );

    // The fifty-first fails as fast, and notifies nobody.
    callers_without_a_terminal(sandbox, &args, 1);
    assert_eq!(settled_notifications(&desktop.notices, 1), 1);

    // `brokerctl login` alone finishes it: the URL is the pending session's.
    let mut login = sandbox.start_login(&["--no-browser"]);
    let open = login.next_event();
    assert_eq!(open["event"], "open_url", "{open}");
    let agent = ureq::Agent::new_with_defaults();
    let page = agent
        .get(open["url"].as_str().unwrap())
        .call()
        .expect("the sign-in page");
    assert_eq!(page.status().as_u16(), 200);
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    assert!(login.finish().0.success());
    assert_eq!(
        status(sandbox)["pending_logins"].as_array().unwrap().len(),
        0
    );
    let info = exec_info(EXEC_V1, false);
    let cred = credential(&sandbox.shim(&as_strs(&args), Some(&info)));
    mock.verify(cred["status"]["token"].as_str().unwrap(), AKS_SERVER_ID)
        .expect("a token the mock signed");
}

#[test]
fn notifications_can_be_turned_off_and_several_pending_logins_are_listed() {
    if !bus_available() {
        return;
    }
    let mock = fast_mock();
    let desktop = desktop();
    let sandbox = &desktop.sandbox;
    let config = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[login]\nnotify = false\n").unwrap();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);

    let first = interactive_session(&mock);
    let mut second = session_args(&mock);
    second.extend([
        "--client-id".into(),
        "0b5f4dc1-0000-4000-8000-000000000002".into(),
    ]);
    callers_without_a_terminal(sandbox, &first, 5);
    callers_without_a_terminal(sandbox, &second, 5);
    assert_eq!(settled_notifications(&desktop.notices, 0), 0);
    let pending = status(sandbox)["pending_logins"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");
    assert_eq!(pending[0]["notified"], false);

    // Two are waiting: brokerctl login lists their commands instead of guessing.
    let listed = sandbox.ctl(&["login"]);
    assert!(!listed.status.success());
    let said = String::from_utf8_lossy(&listed.stderr);
    assert!(said.contains("2 sign-ins are waiting"), "{said}");
    for p in pending.as_array().unwrap() {
        assert!(said.contains(p["command"].as_str().unwrap()), "{said}");
    }
    assert_eq!(mock.requests("devicecode"), 0);
}
