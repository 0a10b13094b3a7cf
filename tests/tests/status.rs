//! `brokerctl status`: relative times, colour only on a terminal, and `--watch` following
//! session events through the WatchEvents stream.

use std::path::Path;

use broker_tests::harness::{
    Sandbox, binaries, device_login, failure, fast_mock, on_path, require, success,
};
use serde_json::Value;

#[test]
fn watch_follows_every_kind_of_session_event() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut watch = sandbox.start_ctl(&["status", "--watch"]);
    assert_eq!(watch.next_event()["event"], "watching");

    let done = device_login(&sandbox, &mock);
    let id = done["session_id"].as_str().unwrap().to_string();
    let event = watch.next_event();
    assert_eq!(event["event"], "logged_in", "{event}");
    assert_eq!(event["session_id"], id.as_str());
    assert_eq!(event["session"]["account"], "alice@contoso.example");
    assert_eq!(event["session"]["state"], "fresh");
    assert!(event["at"].as_str().unwrap().ends_with('Z'), "{event}");
    let refreshes = event["session"]["refreshes"].as_u64().unwrap();

    success(&sandbox.ctl(&["refresh", &id]), "refresh");
    let event = watch.next_event();
    assert_eq!(event["event"], "refreshed", "{event}");
    assert_eq!(event["session"]["refreshes"], refreshes + 1);

    mock.set_outage(Some(503));
    failure(&sandbox.ctl(&["refresh", &id]), "refresh during an outage");
    let event = watch.next_event();
    assert_eq!(event["event"], "refresh_failed", "{event}");
    assert!(
        event["message"].as_str().unwrap().contains("503"),
        "{event}"
    );
    assert_eq!(event["session"]["state"], "degraded");
    mock.set_outage(None);

    mock.revoke_refresh_tokens();
    failure(
        &sandbox.ctl(&["refresh", &id]),
        "refresh with a revoked token",
    );
    let event = watch.next_event();
    assert_eq!(event["event"], "login_required", "{event}");
    assert_eq!(event["session"]["state"], "login_required");

    success(&sandbox.ctl(&["logout", &id]), "logout");
    let event = watch.next_event();
    assert_eq!(event["event"], "logged_out", "{event}");
    assert!(event["session"].is_null(), "{event}");

    // The watch ends, plainly, when brokerd does.
    assert!(daemon.stop().success());
    let (status, stderr) = watch.finish();
    assert!(!status.success());
    assert!(stderr.contains("brokerd"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn the_table_says_when_in_words_and_colours_only_on_a_terminal() {
    if !require("script (package util-linux)", on_path("script")) {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);

    let piped = success(&sandbox.ctl(&["status"]), "status");
    assert!(!piped.contains('\u{1b}'), "no colour into a pipe: {piped}");
    let row = piped
        .lines()
        .find(|l| l.contains("alice@contoso.example"))
        .unwrap_or_else(|| panic!("a row for the session: {piped}"));
    assert!(row.contains("in 59 min") || row.contains("in 1 h"), "{row}");
    assert!(row.ends_with("fresh"), "{row}");

    // `script` gives brokerctl a terminal.
    let on_terminal = |no_color: bool| {
        let mut command = sandbox.command(Path::new("script"));
        if no_color {
            command.env("NO_COLOR", "1");
        }
        let output = command
            .args([
                "-qec",
                &format!("{} status", binaries().brokerctl.display()),
            ])
            .arg("/dev/null")
            .output()
            .expect("script runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let coloured = on_terminal(false);
    assert!(
        coloured.contains("\u{1b}[32mfresh\u{1b}[0m"),
        "the state is green on a terminal: {coloured:?}"
    );
    let plain = on_terminal(true);
    assert!(plain.contains("fresh"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR is honoured: {plain:?}");
}

#[test]
fn watch_in_text_shows_the_table_then_one_line_per_event() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let done = device_login(&sandbox, &mock);
    let id = done["session_id"].as_str().unwrap();

    let mut child = sandbox
        .command(&binaries().brokerctl)
        .args(["status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut next = || lines.next().expect("a line").expect("text");
    while !next().starts_with("Watching session events") {}
    success(&sandbox.ctl(&["refresh", id]), "refresh");
    let line = next();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(&format!("refreshed       {id}")), "{line}");
    assert!(line.contains("token expires in"), "{line}");
    let report: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    assert_eq!(
        report["sessions"][0]["refreshes"], 2,
        "the login and this refresh"
    );
}
