//! A short pass of every `cargo fuzz` target (fuzz/): its committed corpus, then a few seconds
//! of new inputs. The long runs are done by hand (fuzz/README.md); this keeps the targets
//! building and catches a regression the corpus already knows how to reach.

use std::path::{Path, PathBuf};
use std::process::Command;

use broker_tests::harness::{cargo, require};

const TARGETS: &[&str] = &[
    "idp_answer",
    "jwt_claims",
    "config_file",
    "exec_info",
    "kubeconfig_convert",
    "session_index",
    "shim_wire",
    "hpack",
];

/// Seconds of new inputs per target, after the corpus.
const SECONDS: u32 = 10;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn cargo_fuzz_available() -> bool {
    cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn fuzz() -> Command {
    let mut command = cargo();
    // cargo fuzz asks rustc for sanitizer flags that only nightly accepts; the one stable
    // toolchain of CI machines accepts them when told it may.
    command.env("RUSTC_BOOTSTRAP", "1").current_dir(fuzz_dir());
    command
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_a_short_run() {
    if !require(
        "cargo-fuzz (cargo install cargo-fuzz)",
        cargo_fuzz_available(),
    ) {
        return;
    }
    let listed = fuzz()
        .args(["fuzz", "list"])
        .output()
        .expect("cargo fuzz runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let mut names: Vec<&str> = listed.lines().map(str::trim).collect();
    names.sort_unstable();
    let mut expected = TARGETS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "fuzz/Cargo.toml and this test name the same targets"
    );

    let build = fuzz()
        .args(["fuzz", "build", "--sanitizer", "none"])
        .status()
        .expect("cargo fuzz builds");
    assert!(build.success(), "the fuzz targets build");

    for target in TARGETS {
        let scratch = tempfile::tempdir().unwrap();
        let committed = fuzz_dir().join("corpus").join(target);
        assert!(
            committed.read_dir().is_ok_and(|mut d| d.next().is_some()),
            "{target} has a committed corpus"
        );
        // New inputs go to the scratch directory; the committed corpus is only read.
        let output = fuzz()
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(scratch.path())
            .arg(&committed)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS}"))
            .arg(format!("-artifact_prefix={}/", scratch.path().display()))
            .output()
            .expect("cargo fuzz runs");
        assert!(
            output.status.success(),
            "{target} found a crash:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
