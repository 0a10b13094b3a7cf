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

    let said = success(&sandbox.ctl(&["logout", &id]), "logout");
    // brokerd runs on --store memory: the message names that, not a keyring.
    assert!(
        said.contains("its refresh token left brokerd's memory"),
        "{said}"
    );
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

#[test]
fn the_default_table_fits_100_columns_and_shows_the_session_of_each_context() {
    let long_upn = "alexandra.konstantinopoulou-vanderberg@subsidiary.contoso.example";
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        user: broker_tests::mock_entra::MockUser {
            upn: long_upn.into(),
            ..broker_tests::mock_entra::MockConfig::default().user
        },
        ..Default::default()
    });
    let mut sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let done = device_login(&sandbox, &mock);
    let id = done["session_id"].as_str().unwrap().to_string();

    let shim = binaries().shim.display().to_string();
    let host = mock.authority_host();
    let user = |name: &str, tenant: &str| {
        format!(
            "- name: {name}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {shim}\n      args: [get-token, --server-id, {server}, --tenant-id, {tenant}, --authority-host, '{host}']\n",
            server = broker_tests::mock_entra::AKS_SERVER_ID
        )
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:1'}}\nusers:\n{}{}- name: broken\n  user:\n    exec:\n      command: broker-shim\n      args: [get-token, --bogus]\n- name: static\n  user:\n    token: not-ours\ncontexts:\n- name: production-cluster-in-the-main-tenant\n  context: {{cluster: c, user: main}}\n- name: other-tenant\n  context: {{cluster: c, user: other}}\n- name: odd\n  context: {{cluster: c, user: broken}}\n- name: plain\n  context: {{cluster: c, user: static}}\n",
        user("main", broker_tests::mock_entra::TENANT_ID),
        user("other", "fabrikam.example"),
    );
    let path = sandbox.home.join(".kube/config");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, kubeconfig).unwrap();
    sandbox.set_env("KUBECONFIG", &path);

    let text = success(&sandbox.ctl(&["status"]), "status");
    // The tables: from each header to the blank line that ends it.
    let mut in_table = false;
    for line in text.lines() {
        in_table = (in_table || line.starts_with("SESSION") || line.starts_with("CONTEXT"))
            && !line.is_empty();
        if in_table {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }
    let row = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no row {needle}: {text}"))
            .to_string()
    };
    assert!(row(&id).contains("alexandra.konstantinopoulou"), "{text}");
    assert!(row(&id).contains('…'), "a long account is cut: {text}");
    assert!(row("CONTEXT").contains("SESSION"), "{text}");
    let main = row("production-cluster-in-the-main-tenant");
    assert!(main.contains(&id) && main.ends_with("fresh"), "{main}");
    assert!(row("other-tenant").ends_with("not signed in"), "{text}");
    assert!(row("odd").contains("its flags name no session"), "{text}");
    assert!(
        !text.contains("plain "),
        "a context not on broker-shim is left out: {text}"
    );

    // Wide: everything, uncut.
    let wide = success(&sandbox.ctl(&["status", "-o", "wide"]), "status -o wide");
    assert!(wide.contains(long_upn), "{wide}");
    assert!(wide.contains("TENANT") && wide.contains("SERVED"), "{wide}");

    let report: Value =
        serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap();
    let contexts = report["contexts"].as_array().unwrap();
    assert_eq!(contexts.len(), 3, "{report}");
    assert_eq!(contexts[0]["session_id"], id.as_str());
    assert_eq!(contexts[0]["signed_in"], true);
    assert_eq!(contexts[0]["account"], long_upn);
    assert_eq!(contexts[1]["signed_in"], false);
    assert!(contexts[2]["error"].is_string());
}

#[test]
fn a_reader_that_stops_early_ends_brokerctl_quietly() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);
    // `brokerctl status | head -1`, with head gone before brokerctl writes a line.
    for args in [
        &["status"][..],
        &["status", "-o", "json"],
        &["completions", "bash"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = sandbox
            .command(&binaries().brokerctl)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{args:?}: {:?}: {stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
