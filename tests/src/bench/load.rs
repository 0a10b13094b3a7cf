//! A load generator for brokerd: GetToken over many connections, closed loop (each connection
//! sends its next request when the last is answered) or open loop (requests leave on a fixed
//! schedule, whether or not earlier ones were answered), and a burst of new connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_proto::v1::{GetTokenRequest, broker_client::BrokerClient};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// What to ask, and where.
#[derive(Clone)]
pub struct Target {
    pub socket: PathBuf,
    pub request: GetTokenRequest,
}

pub struct Outcome {
    pub answered: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency.value_at_quantile(q))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

async fn connect(target: &Target) -> BrokerClient<Channel> {
    broker_proto::connect(&target.socket)
        .await
        .expect("the load generator reaches brokerd")
}

/// `connections` clients, one connection each, each sending its next GetToken when the last
/// is answered, for `duration`.
pub async fn closed_loop(target: &Target, connections: usize, duration: Duration) -> Outcome {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect(target).await);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let request = target.request.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut answered, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match client.get_token(request.clone()).await {
                        Ok(_) => answered += 1,
                        Err(_) => errors += 1,
                    }
                    let _ = latency.record(sent.elapsed().as_micros() as u64);
                }
                (answered, errors, latency)
            })
        })
        .collect();
    gather(tasks, start).await
}

/// `connections` clients sending `rate` GetToken per second in all, on a fixed schedule spread
/// evenly across them, for `duration`. Latency is measured from each request's departure.
pub async fn open_loop(
    target: &Target,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Outcome {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect(target).await);
    }
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let request = target.request.clone();
            let offset = period.mul_f64(i as f64 / connections as f64);
            tokio::spawn(async move {
                let results = Arc::new(std::sync::Mutex::new((0u64, 0u64, histogram())));
                let mut in_flight = Vec::new();
                let mut next = start + offset;
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    let mut client = client.clone();
                    let request = request.clone();
                    let results = results.clone();
                    in_flight.push(tokio::spawn(async move {
                        let sent = Instant::now();
                        let ok = client.get_token(request).await.is_ok();
                        let took = sent.elapsed().as_micros() as u64;
                        let mut r = results.lock().expect("results");
                        if ok {
                            r.0 += 1;
                        } else {
                            r.1 += 1;
                        }
                        let _ = r.2.record(took);
                    }));
                    next += period;
                }
                for request in in_flight {
                    let _ = request.await;
                }
                let r = results.lock().expect("results");
                (r.0, r.1, r.2.clone())
            })
        })
        .collect();
    let mut outcome = gather(tasks, start).await;
    outcome.elapsed = duration;
    outcome
}

/// `connections` new connections at once, one GetToken each. `elapsed` is the time until the
/// last was answered.
pub async fn burst(target: &Target, connections: usize) -> Outcome {
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let ok = match broker_proto::connect(&target.socket).await {
                    Ok(mut client) => client.get_token(target.request.clone()).await.is_ok(),
                    Err(_) => false,
                };
                let mut latency = histogram();
                let _ = latency.record(sent.elapsed().as_micros() as u64);
                (u64::from(ok), u64::from(!ok), latency)
            })
        })
        .collect();
    gather(tasks, start).await
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Histogram<u64>)>>,
    start: Instant,
) -> Outcome {
    let mut outcome = Outcome {
        answered: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (answered, errors, latency) = task.await.expect("load task");
        outcome.answered += answered;
        outcome.errors += errors;
        let _ = outcome.latency.add(latency);
    }
    outcome.elapsed = start.elapsed();
    outcome
}
