//! Processes under test: brokerd with its readiness line, its log lines to wait on and its
//! clock to move; brokerctl runs that print JSON events; waits that end by a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::Value;

use super::{DEADLINE, block_on};

/// Reads lines from a pipe on a thread, so that waits can have deadlines.
pub(super) fn line_channel(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running brokerd. Killed when dropped; [`Daemon::stop`] stops it the polite way.
pub struct Daemon {
    pub(super) child: Child,
    /// Closes when brokerd exits: the signal that it has.
    pub(super) stdout: Receiver<String>,
    pub(super) log: PathBuf,
    /// brokerd's log lines as they are written.
    pub(super) log_lines: Receiver<String>,
    pub(super) socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        wait_for_exit(&mut self.child, &self.stdout, "brokerd")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` that brokerd writes from now on (lines written
    /// before are skipped as they are read).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "brokerd logged no line with {needle:?} within {} s; its log:\n{}",
                    DEADLINE.as_secs(),
                    self.log()
                ),
            }
        }
    }

    /// Discards the log lines written so far, so that [`Daemon::wait_for_log`] sees only new ones.
    pub fn skip_log(&self) {
        while self.log_lines.try_recv().is_ok() {}
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Moves brokerd's wall clock (it must run with `--test-clock`); returns brokerd's time.
    pub fn advance_clock(&self, seconds: i64) -> std::time::SystemTime {
        let socket = self.socket.clone();
        let now = block_on(async move {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("unix:{}", socket.display()))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("brokerd answers");
            broker_proto::v1::test_clock_client::TestClockClient::new(channel)
                .advance(broker_proto::v1::AdvanceClockRequest { seconds })
                .await
                .expect("brokerd runs with --test-clock")
                .into_inner()
                .now_unix
        });
        std::time::UNIX_EPOCH + Duration::from_secs(now as u64)
    }
}

/// Copies a pipe's lines to `file` and to a channel, on a thread.
pub(super) fn tee_to_file(
    pipe: impl std::io::Read + Send + 'static,
    file: &Path,
) -> Receiver<String> {
    use std::io::Write;
    let mut file = std::fs::File::create(file).expect("log file");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
            let _ = tx.send(line);
        }
    });
    rx
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child to exit: its stdout closing is the signal, bounded by [`DEADLINE`].
/// Lines still arriving are discarded.
pub fn wait_for_exit(
    child: &mut Child,
    stdout: &Receiver<String>,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match stdout.recv_timeout(left) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("{what} did not exit within {} s", DEADLINE.as_secs());
            }
        }
    }
    child.wait().expect("wait")
}

/// `brokerctl login --output json`, running.
/// A running brokerctl that prints JSON lines (`login`, `status --watch`).
pub struct CtlRun {
    pub(super) child: Child,
    pub(super) events: Receiver<String>,
}

impl CtlRun {
    /// The next JSON event line.
    pub fn next_event(&mut self) -> Value {
        match self.events.recv_timeout(DEADLINE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("brokerctl printed a line that is not JSON ({e}): {line}")
            }),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no event from brokerctl within {} s", DEADLINE.as_secs())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let output = self.finish();
                panic!("brokerctl ended without another event: {output:?}")
            }
        }
    }

    /// Waits for brokerctl to exit; returns its status and stderr.
    pub fn finish(&mut self) -> (std::process::ExitStatus, String) {
        let status = wait_for_exit(&mut self.child, &self.events, "brokerctl");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for CtlRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
