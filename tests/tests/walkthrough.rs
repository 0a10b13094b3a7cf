//! The README's "Try it without Azure", step by step as a new user takes it: mock-entra,
//! fake-apiserver writing a kubeconfig, brokerd, a sign-in, and real kubectl through the
//! kubeconfig it wrote.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use broker_tests::harness::{Sandbox, binaries, on_path, require, success};

/// A background command of the walk-through, stopped with the test.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args` and returns it with the first line it prints (its URL).
fn start(sandbox: &Sandbox, program: &Path, args: &[&str]) -> (Background, String) {
    let mut child = sandbox
        .command(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Background(child), line.trim().to_string())
}

#[test]
fn the_readme_walkthrough_reaches_kubectl() {
    if !require("kubectl", on_path("kubectl")) {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    // The steps below are the README's.
    for step in [
        "mock-entra --port 8400",
        "fake-apiserver --mock http://127.0.0.1:8400 --kubeconfig demo.kubeconfig",
        "brokerd --store memory",
        "kubectl --kubeconfig demo.kubeconfig get --raw /api",
    ] {
        assert!(
            readme.contains(step),
            "the README's walk-through has `{step}`"
        );
    }

    let sandbox = Sandbox::new();
    let (_mock, mock_url) = start(&sandbox, &binaries().mock_entra, &["--port", "0"]);
    assert!(mock_url.starts_with("http://127.0.0.1:"), "{mock_url}");
    let kubeconfig = sandbox.root().join("demo.kubeconfig");
    let shim = binaries().shim.display().to_string();
    let (_api, api_url) = start(
        &sandbox,
        &binaries().fake_apiserver,
        &[
            "--mock",
            &mock_url,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--shim",
            &shim,
        ],
    );
    assert!(api_url.starts_with("https://127.0.0.1:"), "{api_url}");
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);

    // Sign in: the device code, approved as the README says (the mock's approve-all).
    let mut login = sandbox.start_login(&[
        "--server-id",
        broker_tests::mock_entra::AKS_SERVER_ID,
        "--tenant-id",
        broker_tests::mock_entra::TENANT_ID,
        "--authority-host",
        &format!("{mock_url}/"),
    ]);
    assert_eq!(login.next_event()["event"], "device_code");
    let approve = sandbox
        .command(Path::new("curl"))
        .args(["-fsS", "-X", "POST", &format!("{mock_url}/_mock/approve")])
        .output()
        .unwrap();
    success(&approve, "curl -X POST …/_mock/approve");
    assert_eq!(login.next_event()["event"], "logged_in");

    let kubectl = sandbox
        .command(Path::new("kubectl"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "--raw",
            "/api",
        ])
        .output()
        .unwrap();
    let api = success(&kubectl, "kubectl through the walk-through's kubeconfig");
    assert!(api.contains("APIVersions"), "{api}");
}
