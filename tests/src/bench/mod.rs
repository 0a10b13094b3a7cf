//! The benchmark suite that `broker-bench` runs: whole-process timings of broker-shim against
//! `cat` and a real peer plugin, kubectl end to end, a load generator for brokerd, memory and
//! wake-ups, and a refresh storm. Every number is measured in the run that prints it; ratios
//! come from pairs measured side by side. Nothing here runs under `cargo test`: benchmarks
//! report, they do not assert.

pub mod daemon;
pub mod forward;
pub mod load;
pub mod process;
pub mod shim;
pub mod storm;
pub mod system;

use std::fmt::Write as _;

/// How long each part runs: `quick` for a look, the default for the numbers in BENCHMARKS.md.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    pub fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Another build's binaries, measured beside this one's in the same run: `broker-bench
/// --baseline DIR`, where DIR holds the `broker-shim` and `brokerd` of, say, the last release
/// (`packaging/build-release --target-dir …` on its checkout).
#[derive(Clone, Debug)]
pub struct Baseline {
    pub shim: std::path::PathBuf,
    pub brokerd: std::path::PathBuf,
}

impl Baseline {
    /// The baseline in `dir`, or why it cannot be one.
    pub fn in_dir(dir: &std::path::Path) -> Result<Self, String> {
        let baseline = Baseline {
            shim: dir.join("broker-shim"),
            brokerd: dir.join("brokerd"),
        };
        for binary in [&baseline.shim, &baseline.brokerd] {
            if !binary.is_file() {
                return Err(format!("--baseline: {} is not a file", binary.display()));
            }
        }
        Ok(baseline)
    }
}

/// The ratio `now ÷ baseline` judged "no worse" with room for the noise of one run.
pub const NO_WORSE: f64 = 1.05;

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub measured: String,
    pub target: String,
    /// What the measurement is compared with, measured in the same run.
    pub peer: String,
    /// None when there is no target, or it could not be judged.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(
        name: &str,
        measured: String,
        target: &str,
        peer: String,
        met: Option<bool>,
    ) -> Self {
        Row {
            name: name.to_string(),
            measured,
            target: target.to_string(),
            peer,
            met,
        }
    }
}

/// The Markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Benchmark | Measured | Target | Compared with (same run) | Met |\n| --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {met} |",
            row.name, row.measured, row.target, row.peer
        );
    }
    out
}

/// The machine the numbers come from.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{} GiB", (kb + 512 * 1024) / (1024 * 1024)))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory}, Linux {kernel}")
}

/// Milliseconds with three decimals.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes in MiB, as `ls -h` shows them.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
