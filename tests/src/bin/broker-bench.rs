//! broker-bench: runs the benchmark suite and prints a Markdown table of measured values beside
//! targets and peers. Run it built for release, as the binaries it measures are:
//!
//!     cargo run --release -p broker-tests --bin broker-bench
//!
//! See BENCHMARKS.md for what each line measures and the last results.

use std::time::Instant;

use broker_proto::v1::GetTokenRequest;
use broker_tests::bench::{self, Row, Scale, load::Target};
use broker_tests::harness::{Sandbox, binaries, session_args, success};
use broker_tests::mock_entra::{MockConfig, MockEntra};
use clap::Parser;

#[derive(Parser)]
#[command(about = "token-broker's benchmark suite: one Markdown table, targets beside results")]
struct Args {
    /// Shorter runs, for a look: the numbers are noisier and some targets are not judged
    #[arg(long)]
    quick: bool,
    /// Only these parts (size, shim, kubectl, load, wakeups, forward, cold, storm); all by
    /// default
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Connect to this socket, send one byte and read it back: the echo candidate of the
    /// forwarding benchmark
    #[arg(long, hide = true, value_name = "SOCKET")]
    echo_client: Option<std::path::PathBuf>,
    /// A directory holding another build's broker-shim and brokerd, measured beside this one
    /// (shim latency against the same brokerd, and throughput)
    #[arg(long, value_name = "DIR")]
    baseline: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Some(socket) = &args.echo_client {
        if let Err(e) = bench::forward::echo_client(socket) {
            eprintln!("broker-bench: echo: {e}");
            std::process::exit(1);
        }
        return;
    }
    let scale = Scale { quick: args.quick };
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    let baseline = match args.baseline.as_deref().map(bench::Baseline::in_dir) {
        Some(Err(why)) => {
            eprintln!("broker-bench: {why}");
            std::process::exit(2);
        }
        Some(Ok(baseline)) => Some(baseline),
        None => None,
    };
    if cfg!(debug_assertions) {
        eprintln!("broker-bench: built without --release; the numbers measure debug binaries");
    }
    bench::system::raise_file_limit();
    let started = Instant::now();
    // Builds (or finds) the binaries under test, with this build's profile.
    let _ = binaries();
    eprintln!("broker-bench: measuring on {}", bench::machine());

    let mut rows: Vec<Row> = Vec::new();
    if wanted("size") {
        rows.push(bench::shim::size());
    }
    if wanted("shim")
        || wanted("kubectl")
        || wanted("load")
        || wanted("wakeups")
        || wanted("forward")
    {
        let mock = MockEntra::start(MockConfig {
            auto_approve: true,
            device_code_interval: 1,
            ..MockConfig::default()
        });
        let sandbox = Sandbox::new();
        let daemon = sandbox.start_daemon_logging(&["--store", "memory"], "warn");
        std::thread::sleep(std::time::Duration::from_secs(1));
        rows.push(bench::daemon::idle_memory(&daemon));
        let mut login = vec!["login".to_string()];
        login.extend(session_args(&mock));
        let login: Vec<&str> = login.iter().map(String::as_str).collect();
        success(&sandbox.ctl(&login), "brokerctl login");
        if wanted("shim") {
            eprintln!("broker-bench: shim");
            rows.extend(bench::shim::latency(
                &sandbox,
                &mock,
                scale,
                baseline.as_ref(),
            ));
        }
        if wanted("kubectl") {
            eprintln!("broker-bench: kubectl");
            rows.push(bench::shim::kubectl(&sandbox, &mock, scale));
        }
        if wanted("load") {
            eprintln!("broker-bench: load");
            let target = Target {
                socket: sandbox.socket.clone(),
                request: GetTokenRequest {
                    spec: Some(broker_proto::v1::SessionSpec {
                        server_id: broker_tests::mock_entra::AKS_SERVER_ID.into(),
                        tenant_id: broker_tests::mock_entra::TENANT_ID.into(),
                        authority_host: mock.authority_host(),
                        ..Default::default()
                    }),
                    credentials: None,
                    interactive: false,
                },
            };
            rows.extend(bench::daemon::under_load(&daemon, &target, scale));
            if let Some(baseline) = &baseline {
                eprintln!("broker-bench: load, beside the baseline");
                // Two fresh daemons, each in its own sandbox with its session signed in: the
                // one above has just been through the burst.
                let fresh = |brokerd: &std::path::Path| {
                    let sandbox = Sandbox::new();
                    let daemon =
                        sandbox.start_daemon_binary(brokerd, &["--store", "memory"], "warn");
                    success(&sandbox.ctl(&login), "brokerctl login");
                    let target = Target {
                        socket: sandbox.socket.clone(),
                        ..target.clone()
                    };
                    (sandbox, daemon, target)
                };
                let (_now_sandbox, _now, now) = fresh(&binaries().brokerd);
                let (_old_sandbox, _old, old) = fresh(&baseline.brokerd);
                rows.push(bench::daemon::throughput_beside_baseline(&now, &old, scale));
            }
        }
        if wanted("forward") {
            eprintln!("broker-bench: forwarding over ssh");
            rows.push(bench::forward::through_ssh(&sandbox, &mock, scale));
        }
        if wanted("wakeups") {
            eprintln!("broker-bench: wake-ups");
            rows.push(bench::daemon::wakeups(&daemon, scale));
        }
    }
    if wanted("cold") {
        eprintln!("broker-bench: cold start on demand");
        rows.push(bench::forward::cold_start(scale));
    }
    if wanted("storm") {
        eprintln!("broker-bench: refresh storm");
        rows.extend(bench::storm::run(scale));
    }

    println!("Measured on {}.\n", bench::machine());
    print!("{}", bench::table(&rows));
    let met = rows.iter().filter(|r| r.met == Some(true)).count();
    let judged = rows.iter().filter(|r| r.met.is_some()).count();
    println!(
        "\n{met} of {judged} targets met; {:.0} s{}.",
        started.elapsed().as_secs_f64(),
        if args.quick {
            " (--quick: shortened runs; targets that need the full run are not met)"
        } else {
            ""
        }
    );
}
