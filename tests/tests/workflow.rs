//! The public CI workflow (`.github/workflows/ci.yml`) cannot run here, so it is checked here:
//! it parses, each job runs somewhere, and every file, test target, package and binary its
//! commands name exists in this repository. A renamed test or script then fails this test
//! instead of a run nobody watches.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use yaml_edit::{Document, Mapping, YamlNode};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn text(node: &YamlNode) -> Option<String> {
    node.as_scalar().map(|s| s.as_string())
}

/// What this repository has that a command may name.
struct Repository<'a> {
    root: &'a Path,
    packages: BTreeSet<String>,
    binaries: BTreeSet<String>,
}

impl Repository<'_> {
    fn here() -> Repository<'static> {
        let root = root();
        let mut packages = BTreeSet::new();
        let mut binaries = BTreeSet::new();
        for member in ["proto", "daemon", "shim", "tests"] {
            let dir = root.join(member);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let mut section = "";
            for line in manifest.lines() {
                if line.starts_with('[') {
                    section = line;
                    continue;
                }
                let Some(name) = line.strip_prefix("name = ") else {
                    continue;
                };
                let name = name.trim_matches('"').to_string();
                match section {
                    "[package]" => {
                        // The package's own binary, when it has src/main.rs.
                        if dir.join("src/main.rs").is_file() {
                            binaries.insert(name.clone());
                        }
                        packages.insert(name);
                    }
                    "[[bin]]" => {
                        binaries.insert(name);
                    }
                    _ => {}
                }
            }
        }
        // Binaries named after their file under src/bin.
        for dir in ["tests/src/bin", "daemon/src/bin"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                binaries.insert(name.trim_end_matches(".rs").to_string());
            }
        }
        Repository {
            root,
            packages,
            binaries,
        }
    }
}

/// Everything wrong with the workflow `yaml`, as lines for a person.
fn problems(yaml: &str, repo: &Repository<'_>) -> Vec<String> {
    let mut found = Vec::new();
    let doc = match Document::from_str(yaml) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let Some(top) = doc.as_mapping() else {
        return vec!["is not a mapping".into()];
    };
    let Some(jobs) = top.get_mapping("jobs") else {
        return vec!["has no jobs".into()];
    };
    let mut names = Vec::new();
    for (name, job) in jobs.iter() {
        let name = text(&name).unwrap_or_default();
        names.push(name.clone());
        let Some(job) = job.as_mapping() else {
            found.push(format!("job {name} is not a mapping"));
            continue;
        };
        check_job(&name, job, repo, &mut found);
    }
    for wanted in ["linux", "macos"] {
        if !names.iter().any(|n| n == wanted) {
            found.push(format!("no {wanted} job"));
        }
    }
    found
}

fn check_job(name: &str, job: &Mapping, repo: &Repository<'_>, found: &mut Vec<String>) {
    let wanted_runner = match name {
        "linux" => Some("ubuntu-"),
        "macos" => Some("macos-"),
        _ => None,
    };
    match (job.get("runs-on").as_ref().and_then(text), wanted_runner) {
        (None, _) => found.push(format!("job {name} has no runs-on")),
        (Some(runner), Some(prefix)) if !runner.starts_with(prefix) => {
            found.push(format!("job {name} runs on {runner}"));
        }
        _ => {}
    }
    let Some(steps) = job.get_sequence("steps") else {
        found.push(format!("job {name} has no steps"));
        return;
    };
    let mut commands = String::new();
    for step in steps.values() {
        let Some(step) = step.as_mapping() else {
            continue;
        };
        if let Some(action) = step.get("uses").as_ref().and_then(text)
            && !action.starts_with("actions/checkout@")
        {
            found.push(format!("job {name} uses {action}, which is not checkout"));
        }
        if let Some(run) = step.get("run").as_ref().and_then(text) {
            commands.push_str(&run);
            commands.push('\n');
        }
    }
    check_commands(name, &commands, repo, found);
    if name == "linux" && !commands.contains(".ci/run") {
        found.push("the linux job does not run .ci/run".into());
    }
}

/// Files, test targets, packages and binaries the commands name. A command may go on over
/// several lines (a folded `>-` block arrives as one).
fn check_commands(job: &str, commands: &str, repo: &Repository<'_>, found: &mut Vec<String>) {
    for line in commands.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Flags that name packages and test targets, in cargo's commands only.
        if let Some(cargo) = words.iter().position(|w| *w == "cargo") {
            let args = &words[cargo..];
            for (i, word) in args.iter().enumerate() {
                let next = args.get(i + 1).copied().unwrap_or("");
                match *word {
                    "--test" if !repo.root.join(format!("tests/tests/{next}.rs")).is_file() => {
                        found.push(format!("job {job}: no test target {next}"));
                    }
                    "-p" | "--package" if !repo.packages.contains(next) => {
                        found.push(format!("job {job}: no package {next}"));
                    }
                    _ => {}
                }
            }
        }
        for word in &words {
            for prefix in ["target/release/", "target/debug/"] {
                if let Some(binary) = word.strip_prefix(prefix)
                    && !repo.binaries.contains(binary)
                {
                    found.push(format!("job {job}: no binary {binary}"));
                }
            }
            let path = word.trim_start_matches("./");
            let in_repo = [
                ".ci/",
                "packaging/",
                "tests/",
                "docs/",
                "proto/",
                "daemon/",
                "shim/",
                "fuzz/",
            ]
            .iter()
            .any(|dir| path.starts_with(dir));
            if in_repo && !repo.root.join(path).exists() {
                found.push(format!("job {job}: no file {path}"));
            }
        }
    }
}

#[test]
fn the_public_workflow_parses_and_names_only_what_exists() {
    let repo = Repository::here();
    let yaml = std::fs::read_to_string(root().join(".github/workflows/ci.yml")).unwrap();
    let problems = problems(&yaml, &repo);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_workflow_that_names_what_is_gone_is_caught() {
    let repo = Repository::here();
    let broken = "jobs:\n  linux:\n    runs-on: ubuntu-latest\n    steps:\n      \
                  - uses: actions/checkout@v4\n      - run: bash .ci/run\n  macos:\n    \
                  runs-on: macos-latest\n    steps:\n      - uses: someone/else@v1\n      \
                  - run: |\n          cargo test -p broker-gone --test no_such_test\n          \
                  target/release/brokerx --help\n          packaging/no-such-script\n      \
                  - run: >-\n          cargo test\n          --test folded_gone\n";
    let problems = problems(broken, &repo);
    for expected in [
        "job macos uses someone/else@v1, which is not checkout",
        "job macos: no package broker-gone",
        "job macos: no test target no_such_test",
        "job macos: no binary brokerx",
        "job macos: no file packaging/no-such-script",
        "job macos: no test target folded_gone",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected} missing from {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert_eq!(
        problems_of_missing_jobs(&repo),
        ["no linux job", "no macos job"]
    );
}

fn problems_of_missing_jobs(repo: &Repository<'_>) -> Vec<String> {
    problems("jobs: {}\n", repo)
}
