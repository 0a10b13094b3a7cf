//! Always fresh: single-flight, outages, revocation, clock jumps and the refresh schedule,
//! against brokerd processes whose wall clock the tests move (`brokerd --test-clock`).

use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use broker_tests::harness::{
    DEADLINE, EXEC_V1, Sandbox, as_strs, binaries, block_on, credential, device_login, exec_info,
    failure, fast_mock, session_args, success,
};
use broker_tests::mock_entra::{AKS_CLIENT_ID, AKS_SERVER_ID, MockConfig, MockEntra};
use serde_json::Value;

fn status(sandbox: &Sandbox) -> Value {
    serde_json::from_str(&success(&sandbox.ctl(&["status", "-o", "json"]), "status")).unwrap()
}

/// Waits until brokerd has read the answers of `count` refreshes made after `since`. The mock
/// counts a request when it arrives and answers a little later; a test that moves the clock
/// on before brokerd has read the answer sees that answer's token expire on arrival.
fn wait_for_refreshes_read(sandbox: &Sandbox, since: SystemTime, count: usize) {
    let read = || {
        status(sandbox)["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["last_refresh_at"].as_str())
            .filter(|at| humantime::parse_rfc3339(at).is_ok_and(|at| at > since))
            .count()
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while read() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "brokerd read {} of {count} refresh answers",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expiry(output: &Output) -> SystemTime {
    let cred = credential(output);
    humantime::parse_rfc3339(cred["status"]["expirationTimestamp"].as_str().unwrap()).unwrap()
}

fn token(output: &Output) -> String {
    credential(output)["status"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn two_hundred_concurrent_shims_share_one_refresh_of_an_expired_token() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    device_login(&sandbox, &mock);
    // Slow answers, so that every shim arrives while the one refresh is in flight.
    mock.set_delay(Some(Duration::from_millis(500)));
    let now = daemon.advance_clock(2 * 3600);

    let args = session_args(&mock);
    let children: Vec<_> = (0..200)
        .map(|_| {
            sandbox
                .command(&binaries().shim)
                .arg("get-token")
                .args(&args)
                .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("shim starts")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    assert_eq!(
        mock.requests("refresh_token"),
        1,
        "one refresh for everyone"
    );
    let first = token(&outputs[0]);
    for output in &outputs {
        assert_eq!(token(output), first);
        assert!(expiry(output) > now + Duration::from_secs(3000));
    }
    mock.verify(&first, AKS_SERVER_ID)
        .expect("a token the mock signed");
}

#[test]
fn an_outage_serves_the_valid_token_backs_off_and_recovers() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    device_login(&sandbox, &mock);
    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let login_token = token(&sandbox.shim(&as_strs(&args), Some(&info)));

    // The IdP goes down 50 minutes into the token's 60; ten minutes pass in one-minute steps,
    // with kubectl asking three times a minute.
    mock.set_outage(Some(503));
    daemon.advance_clock(50 * 60);
    let mut runs = 0;
    let mut served = 0;
    for _ in 0..11 {
        let now = daemon.advance_clock(60);
        for _ in 0..3 {
            runs += 1;
            let output = sandbox.shim(&as_strs(&args), Some(&info));
            if output.status.success() {
                served += 1;
                // The token from before the outage, and never once it has expired.
                assert_eq!(token(&output), login_token);
                assert!(expiry(&output) > now, "an expired token was served");
            } else {
                let err = failure(&output, "shim during the outage");
                assert!(err.contains("cannot refresh"), "{err}");
                assert!(err.contains("HTTP 503"), "{err}");
            }
        }
        let state = &status(&sandbox)["sessions"][0];
        assert_eq!(state["state"], "degraded", "{state}");
        assert!(state["last_error"].as_str().unwrap().contains("503"));
    }
    assert!(served > 0 && served < runs, "served {served} of {runs}");
    // Capped exponential backoff: a handful of attempts in ten minutes, not one per run.
    let attempts = mock.requests("refresh_token");
    assert!(
        attempts <= 12,
        "{attempts} requests during the outage for {runs} runs"
    );
    let st = &status(&sandbox)["sessions"][0];
    assert_eq!(st["refresh_failures"], attempts);

    // The IdP is back: after the backoff, the next request refreshes and all is well. (The
    // scheduler's own retry, timed in real seconds, may have slipped in one more failure.)
    mock.set_outage(None);
    daemon.advance_clock(5 * 60);
    let output = sandbox.shim(&as_strs(&args), Some(&info));
    assert_ne!(token(&output), login_token);
    let after = mock.requests("refresh_token");
    assert!(
        (attempts + 1..=attempts + 2).contains(&after),
        "{attempts} then {after}"
    );
    let st = &status(&sandbox)["sessions"][0];
    assert_eq!(st["state"], "fresh");
    assert!(st["last_error"].is_null());
}

#[test]
fn a_revoked_refresh_token_fails_fast_until_a_new_login() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    device_login(&sandbox, &mock);
    mock.revoke_refresh_tokens();
    daemon.advance_clock(2 * 3600);

    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let err = failure(&sandbox.shim(&as_strs(&args), Some(&info)), "shim");
    let expected = format!(
        "run: brokerctl login --server-id {AKS_SERVER_ID} --client-id {AKS_CLIENT_ID} \
         --tenant-id 00000000-0000-0000-0000-000000000001 --authority-host {} --login devicecode",
        mock.authority_host()
    );
    assert!(err.trim().ends_with(&expected), "{err}");
    assert!(err.contains("AADSTS50173"), "{err}");
    let asked = mock.requests("refresh_token");
    assert!(asked >= 1);

    // Neither kubectl nor the scheduler asks again, however much time passes.
    for _ in 0..5 {
        failure(&sandbox.shim(&as_strs(&args), Some(&info)), "shim");
    }
    daemon.advance_clock(3 * 86_400);
    failure(&sandbox.shim(&as_strs(&args), Some(&info)), "shim");
    assert_eq!(mock.requests("refresh_token"), asked);
    assert_eq!(status(&sandbox)["sessions"][0]["state"], "login_required");

    device_login(&sandbox, &mock);
    success(
        &sandbox.shim(&as_strs(&args), Some(&info)),
        "shim after a new login",
    );
}

#[test]
fn after_a_clock_jump_the_next_request_gets_a_refreshed_token() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    device_login(&sandbox, &mock);
    let args = session_args(&mock);
    let info = exec_info(EXEC_V1, false);
    let before = sandbox.shim(&as_strs(&args), Some(&info));
    assert_eq!(mock.requests("refresh_token"), 0);

    // Three hours pass in one go, as when a laptop wakes up.
    let now = daemon.advance_clock(3 * 3600);
    let after = sandbox.shim(&as_strs(&args), Some(&info));
    assert_ne!(token(&after), token(&before));
    assert!(expiry(&after) > now + Duration::from_secs(3000));
    assert_eq!(mock.requests("refresh_token"), 1);
}

#[test]
fn the_told_expiry_is_the_real_one_less_the_margin() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);
    let output = sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    );
    let told = expiry(&output);
    let claims = mock.verify(&token(&output), AKS_SERVER_ID).unwrap();
    let real = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp);
    let margin = real.duration_since(told).unwrap();
    // Two minutes, give or take the second it took to issue.
    assert!(
        (Duration::from_secs(118)..=Duration::from_secs(122)).contains(&margin),
        "{margin:?}"
    );
}

/// Signs in to `count` sessions (one per tenant) straight over gRPC, with a mock that approves
/// device codes at once.
fn login_many(sandbox: &Sandbox, mock: &MockEntra, count: usize) {
    let host = mock.authority_host();
    let socket = sandbox.socket.clone();
    block_on(async move {
        let client = broker_proto::connect(&socket)
            .await
            .expect("brokerd answers");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let mut client = client.clone();
            let host = host.clone();
            tasks.spawn(async move {
                let spec = broker_proto::v1::SessionSpec {
                    server_id: AKS_SERVER_ID.into(),
                    tenant_id: format!("00000000-0000-0000-0000-{i:012}"),
                    authority_host: host,
                    ..Default::default()
                };
                let mut events = client
                    .login(broker_proto::v1::LoginRequest {
                        spec: Some(spec),
                        ..Default::default()
                    })
                    .await
                    .expect("login starts")
                    .into_inner();
                while let Some(event) = events.message().await.expect("login events") {
                    use broker_proto::v1::login_event::Event;
                    match event.event {
                        Some(Event::LoggedIn(_)) => return,
                        Some(Event::Failed(f)) => panic!("login failed: {}", f.message),
                        _ => {}
                    }
                }
                panic!("the login ended without a result");
            });
            // Keep a bounded number of logins in flight.
            if tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

#[test]
fn a_thousand_idle_sessions_keep_alive_spread_out_and_under_the_cap() {
    let mock = MockEntra::start(MockConfig {
        auto_approve: true,
        ..MockConfig::default()
    });
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    login_many(&sandbox, &mock, 1000);
    let start = daemon.advance_clock(0);

    // Past the active window: idle sessions are left alone, apart from keepalives.
    daemon.advance_clock(13 * 3600);
    let st = status(&sandbox);
    let sessions = st["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1000);
    assert_eq!(mock.requests("refresh_token"), 0);

    // Keepalives are planned 7 days ± 10% after sign-in, spread over that window.
    let mut planned: Vec<SystemTime> = sessions
        .iter()
        .map(|s| humantime::parse_rfc3339(s["next_refresh_at"].as_str().unwrap()).unwrap())
        .collect();
    planned.sort();
    let week = Duration::from_secs(7 * 86_400);
    let (earliest, latest) = (planned[0], planned[999]);
    assert!(earliest >= start + week.mul_f64(0.9) - Duration::from_secs(60));
    assert!(latest <= start + week.mul_f64(1.1) + Duration::from_secs(60));
    assert!(
        latest.duration_since(earliest).unwrap() > week.mul_f64(0.18),
        "keepalives bunch together"
    );

    // Walk through the window in 4-hour steps: each step refreshes exactly the sessions due by
    // then, so the refreshes come spread over the window (about 120 a step) rather than all at
    // once.
    mock.set_delay(Some(Duration::from_millis(20)));
    let mut now = daemon.advance_clock(0);
    let mut done = 0;
    let mut steps = Vec::new();
    while done < 1000 {
        now = daemon.advance_clock(4 * 3600);
        let due = planned.iter().filter(|t| **t <= now).count() as u64;
        assert!(
            mock.wait_for_requests("refresh_token", due, DEADLINE),
            "{} of {due} due keepalives ran",
            mock.requests("refresh_token")
        );
        wait_for_refreshes_read(&sandbox, start + Duration::from_secs(86_400), due as usize);
        if due > done {
            steps.push(due - done);
        }
        done = due;
    }
    assert!(now > start + week);
    assert_eq!(mock.requests("refresh_token"), 1000);
    assert!(
        steps.len() >= 7,
        "keepalives came in only {} steps: {steps:?}",
        steps.len()
    );
    assert!(
        steps.iter().all(|n| *n <= 250),
        "one step took too many: {steps:?}"
    );
    let cap = mock.max_concurrent_token_requests();
    assert!(cap <= 4, "{cap} token requests at once, over the cap of 4");
    assert!(
        cap >= 2,
        "refreshes ran one at a time ({cap}): the cap was not exercised"
    );
}

/// An issuer whose clock is ten minutes ahead of this machine's, answering without
/// `expires_in`: the token's own `exp` (on the issuer's clock, as the API server reads it) less
/// the skew its `Date` header shows is when the token ends here. Neither a guess (five minutes)
/// nor `exp` taken as a local time (ten minutes too late: served after the API server refuses
/// it).
#[test]
fn expiry_is_judged_on_the_issuers_clock() {
    let mock = broker_tests::mock_entra::MockEntra::start(broker_tests::mock_entra::MockConfig {
        device_code_interval: 1,
        clock_offset: 600,
        omit_expires_in: true,
        access_token_lifetime: 1800,
        ..Default::default()
    });
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);
    let cred = credential(&sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    ));
    let told = cred["status"]["expirationTimestamp"].as_str().unwrap();
    let told = humantime::parse_rfc3339(told).unwrap();
    // The token lives 1800 s; kubectl is told 120 s less.
    let expected = std::time::SystemTime::now() + std::time::Duration::from_secs(1800 - 120);
    let off = match told.duration_since(expected) {
        Ok(later) => later,
        Err(earlier) => earlier.duration(),
    };
    assert!(
        off < std::time::Duration::from_secs(30),
        "told {told:?}, expected about {expected:?}"
    );
}
