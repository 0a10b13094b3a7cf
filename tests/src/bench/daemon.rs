//! brokerd under load and at rest: throughput, latency with a thousand connections, a burst of
//! new connections, its memory before and after, and how often it wakes when nothing is due.

use std::time::{Duration, Instant};

use super::load::{self, Target};
use super::system::{context_switches, rss};
use super::{NO_WORSE, Row, Scale, mib, ms};
use crate::harness::Daemon;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn idle_memory(daemon: &Daemon) -> Row {
    let bytes = rss(daemon.pid()).unwrap_or(0);
    Row::new(
        "brokerd RSS, idle after start",
        mib(bytes),
        "≤ 10 MB",
        "-".into(),
        Some(bytes <= 10_000_000),
    )
}

pub fn under_load(daemon: &Daemon, target: &Target, scale: Scale) -> Vec<Row> {
    let rt = runtime();
    let mut rows = Vec::new();

    let duration = Duration::from_secs(scale.pick(10, 3));
    let closed = rt.block_on(load::closed_loop(target, 64, duration));
    rows.push(Row::new(
        "brokerd GetToken throughput, 64 closed-loop connections",
        format!("{:.0}/s", closed.rate()),
        "≥ 40,000/s",
        format!(
            "p50 {}, p99 {}, {} errors",
            ms(closed.quantile(0.5)),
            ms(closed.quantile(0.99)),
            closed.errors
        ),
        Some(closed.errors == 0 && closed.rate() >= 40_000.0),
    ));

    let open = rt.block_on(load::open_loop(target, 1000, 5000.0, duration));
    rows.push(Row::new(
        "brokerd p99 latency, 1,000 connections, 5,000/s offered",
        ms(open.quantile(0.99)),
        "≤ 1 ms",
        format!(
            "p50 {}, max {}, {:.0}/s answered, {} errors",
            ms(open.quantile(0.5)),
            ms(open.quantile(1.0)),
            open.rate(),
            open.errors
        ),
        Some(open.errors == 0 && open.quantile(0.99) <= Duration::from_millis(1)),
    ));

    let peak = rss(daemon.pid()).unwrap_or(0);
    let burst = rt.block_on(load::burst(target, 1000));
    let peak = peak.max(rss(daemon.pid()).unwrap_or(0));
    rows.push(Row::new(
        "1,000 connections opened at once, one GetToken each",
        format!("all answered in {}", ms(burst.elapsed)),
        "≤ 1 s",
        format!("{} answered, {} errors", burst.answered, burst.errors),
        Some(burst.errors == 0 && burst.elapsed <= Duration::from_secs(1)),
    ));
    drop(rt);

    let settle = Duration::from_secs(scale.pick(60, 10));
    std::thread::sleep(settle);
    let after = rss(daemon.pid()).unwrap_or(0);
    rows.push(Row::new(
        "brokerd RSS a minute after the burst",
        mib(after),
        "≤ 24 MB",
        format!("{} at the peak of the load", mib(peak)),
        Some(after <= 24_000_000 && settle >= Duration::from_secs(60)),
    ));
    rows
}

/// GetToken throughput of this brokerd and the baseline's, each serving its own signed-in
/// session, measured in alternating slices, in the order ABBA ABBA …, so that drift and
/// whatever the one before left behind hit both alike.
pub fn throughput_beside_baseline(now: &Target, baseline: &Target, scale: Scale) -> Row {
    let rt = runtime();
    let slice = Duration::from_secs(2);
    let (mut answered, mut errors, mut elapsed) = ([0u64; 2], [0u64; 2], [Duration::ZERO; 2]);
    for round in 0..scale.pick(8, 2) {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let target = [now, baseline][i];
            let outcome = rt.block_on(load::closed_loop(target, 64, slice));
            answered[i] += outcome.answered;
            errors[i] += outcome.errors;
            elapsed[i] += outcome.elapsed;
        }
    }
    let rate = |i: usize| answered[i] as f64 / elapsed[i].as_secs_f64();
    let ratio = rate(0) / rate(1);
    Row::new(
        "GetToken throughput ÷ the baseline's brokerd, 64 connections",
        format!("{ratio:.2}× ({:.0}/s)", rate(0)),
        &format!("no worse (≥ {:.2}×)", 1.0 / NO_WORSE),
        format!(
            "baseline {:.0}/s; {} and {} errors",
            rate(1),
            errors[0],
            errors[1]
        ),
        Some(errors == [0, 0] && ratio * NO_WORSE >= 1.0),
    )
}

/// Wake-ups while nothing is due. A wake-up is an episode in which any of brokerd's threads
/// ran (its context-switch counters moved), however many threads and switches it took: that
/// is what takes a laptop's CPU out of idle. Sampled every 200 ms over a quiet window; the
/// target is about the period, so the shortest gap between wake-ups is what is judged.
pub fn wakeups(daemon: &Daemon, scale: Scale) -> Row {
    let window = Duration::from_secs(scale.pick(185, 20));
    let sample = Duration::from_millis(200);
    // Let whatever the last action set in motion finish first: the HTTP client's pool lets go
    // of an idle connection to the IdP after 20 s (checked at that interval), and the memory
    // reclaimer runs once brokerd has been quiet for 20 s. Those follow activity; the target
    // is about what recurs.
    std::thread::sleep(Duration::from_secs(scale.pick(100, 2)));
    let started = Instant::now();
    let mut last = context_switches(daemon.pid());
    let first = last;
    let mut running = false;
    let mut episodes: Vec<Duration> = Vec::new();
    while started.elapsed() < window {
        std::thread::sleep(sample);
        let now = context_switches(daemon.pid());
        if now > last && !running {
            episodes.push(started.elapsed());
        }
        running = now > last;
        last = now;
    }
    let switches = last.saturating_sub(first);
    let shortest = episodes.windows(2).map(|pair| pair[1] - pair[0]).min();
    let per_minute = episodes.len() as f64 * 60.0 / window.as_secs_f64();
    Row::new(
        "brokerd wake-ups while idle (all threads)",
        match shortest {
            Some(gap) => format!(
                "{per_minute:.1}/min, at least {:.1} s apart",
                gap.as_secs_f64()
            ),
            None => format!("{per_minute:.1}/min"),
        },
        "≤ 1/min",
        format!(
            "{} wake-ups, {switches} context switches in {} s",
            episodes.len(),
            window.as_secs()
        ),
        Some(
            shortest.is_none_or(|gap| gap >= Duration::from_secs(59))
                && window >= Duration::from_secs(120),
        ),
    )
}
