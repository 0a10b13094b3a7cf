//! Whole-process timings: start a program, read its output to the end, wait for it. Candidates
//! are measured in turn within each round, so that drift (frequency scaling, other load) hits
//! them alike and their ratios are fair.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program to time, with how to start it.
pub struct Candidate {
    pub name: String,
    pub command: Box<dyn Fn() -> Command>,
}

/// Timings of one candidate, sorted.
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn quantile(&self, q: f64) -> Duration {
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }
}

/// One run: spawn, read stdout to EOF (stderr goes to /dev/null), wait. Panics when the program
/// fails: a failing candidate has no time worth reporting.
pub fn time_once(command: &mut Command) -> Duration {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = command.spawn().expect("the candidate starts");
    let mut sink = Vec::with_capacity(4096);
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut sink)
        .expect("output");
    let status = child.wait().expect("wait");
    let took = start.elapsed();
    assert!(status.success(), "{command:?} failed: {status}");
    took
}

/// `rounds` rounds (after `warmup` untimed ones), each candidate once per round.
pub fn compare(candidates: &[Candidate], warmup: usize, rounds: usize) -> Vec<Samples> {
    for _ in 0..warmup {
        for c in candidates {
            time_once(&mut (c.command)());
        }
    }
    let mut all: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); candidates.len()];
    for _ in 0..rounds {
        for (c, samples) in candidates.iter().zip(all.iter_mut()) {
            samples.push(time_once(&mut (c.command)()));
        }
    }
    all.into_iter()
        .map(|mut v| {
            v.sort_unstable();
            Samples(v)
        })
        .collect()
}
