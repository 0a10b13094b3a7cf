//! A refresh storm: thousands of sessions whose tokens all come due within the same minute.
//! brokerd must refresh each inside its jitter window, without ever having more token requests
//! in flight than its cap; and the memory those sessions take is measured on the way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use broker_proto::v1::{self, GetTokenRequest, LoginMode};

use super::system::rss;
use super::{Row, Scale, mib};
use crate::harness::Sandbox;
use crate::mock_entra::{App, MockConfig, MockEntra, TENANT_ID};

const APP: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const SECRET: &str = "bench-secret";
/// Tokens live two minutes: the storm comes a minute after the sessions are made.
const LIFETIME: u64 = 120;
const JITTER: f64 = 0.1;
const CAP: u64 = 4;

fn resource(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn request(authority: &str, i: usize) -> GetTokenRequest {
    GetTokenRequest {
        spec: Some(v1::SessionSpec {
            server_id: resource(i),
            tenant_id: TENANT_ID.into(),
            client_id: APP.into(),
            authority_host: authority.to_string(),
            login_mode: LoginMode::ServicePrincipal as i32,
            ..Default::default()
        }),
        credentials: Some(v1::Credentials {
            client_secret: SECRET.into(),
            ..Default::default()
        }),
        interactive: false,
    }
}

async fn sessions(socket: &std::path::Path) -> Vec<v1::SessionInfo> {
    let mut client = broker_proto::connect(socket).await.expect("brokerd");
    client
        .status(v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .sessions
}

pub fn run(scale: Scale) -> Vec<Row> {
    let count = scale.pick(10_000, 1_000);
    let mock = MockEntra::start(MockConfig {
        access_token_lifetime: LIFETIME,
        ..MockConfig::default()
    });
    mock.register_app(
        APP,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    for i in 0..count {
        mock.state().register_resource(&resource(i));
    }
    let sandbox = Sandbox::new();
    let config = sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &config,
        format!(
            "[refresh]\nmin_remaining = \"30s\"\nexpiry_margin = \"10s\"\njitter = {JITTER}\n\
             max_concurrent = {CAP}\n"
        ),
    )
    .expect("config");
    let daemon = sandbox.start_daemon_logging(&["--store", "memory"], "warn");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let socket = sandbox.socket.clone();
    let made = Instant::now();
    rt.block_on(async {
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..32)
            .map(|_| {
                let next = next.clone();
                let socket = socket.clone();
                let authority = mock.authority_host();
                tokio::spawn(async move {
                    let mut client = broker_proto::connect(&socket).await.expect("brokerd");
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        let req = request(&authority, i);
                        client.get_token(req).await.expect("a session is made");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
    let making = made.elapsed();
    let held = rss(daemon.pid()).unwrap_or(0);
    let mut rows = vec![Row::new(
        &format!("brokerd RSS holding {count} sessions"),
        mib(held),
        "≤ 80 MB (10,000 sessions)",
        format!("made in {:.1} s", making.as_secs_f64()),
        Some(count >= 10_000 && held <= 80_000_000),
    )];

    // Each session's plan, then wait for the storm to pass.
    let planned: HashMap<String, (i64, i64)> = rt
        .block_on(sessions(&socket))
        .into_iter()
        .map(|s| {
            (
                s.session_id.clone(),
                (s.last_refresh_unix, s.next_refresh_unix),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(LIFETIME + 60);
    let done = loop {
        let now = rt.block_on(sessions(&socket));
        if now.iter().all(|s| s.refreshes >= 2) || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let mut late = 0usize;
    let mut early = 0usize;
    let mut missing = 0usize;
    let mut worst = 0i64;
    for s in &done {
        let Some(&(issued, plan)) = planned.get(&s.session_id) else {
            continue;
        };
        if s.refreshes < 2 {
            missing += 1;
            continue;
        }
        // The window is the jitter spread around the nominal time; one second of slack for
        // timestamps kept in whole seconds.
        let spread = ((plan - issued) as f64 * JITTER * 2.0).ceil() as i64 + 1;
        let lateness = s.last_refresh_unix - plan;
        worst = worst.max(lateness);
        if lateness > spread {
            late += 1;
        }
        if lateness < -1 {
            early += 1;
        }
    }
    let in_flight = mock.max_concurrent_token_requests();
    rows.push(Row::new(
        &format!("refresh storm: {count} sessions due within a minute"),
        format!(
            "{} refreshed in their window ({late} late, {early} early, {missing} not refreshed; \
             worst {worst} s after plan); at most {in_flight} token requests in flight",
            done.len() - late - early - missing
        ),
        "all in their jitter window; never more than the cap (4) in flight",
        format!("tokens live {LIFETIME} s, jitter ±{:.0}%", JITTER * 100.0),
        Some(count >= 10_000 && late + early + missing == 0 && in_flight <= CAP),
    ));
    drop(daemon);
    rows
}
