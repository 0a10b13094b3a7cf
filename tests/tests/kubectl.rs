//! Real kubectl, with a kubeconfig whose exec entry runs broker-shim, against an HTTPS fake API
//! server that accepts only tokens the mock Entra ID signed.

use std::process::Output;

use base64::Engine;
use broker_tests::apiserver::FakeApiServer;
use broker_tests::harness::{
    EXEC_V1, EXEC_V1BETA1, Sandbox, binaries, device_login, failure, fast_mock, on_path, require,
    session_args, success,
};
use broker_tests::mock_entra::MockEntra;

/// A kubeconfig with one cluster (the fake API server) and one user per exec apiVersion.
fn kubeconfig(sandbox: &Sandbox, api: &FakeApiServer, mock: &MockEntra) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(api.ca_pem());
    let args: Vec<String> = std::iter::once("get-token".to_string())
        .chain(session_args(mock))
        .chain(["--login".to_string(), "devicecode".to_string()])
        .map(|a| format!("\"{a}\""))
        .collect();
    let user = |name: &str, api_version: &str| {
        format!(
            "- name: {name}\n  user:\n    exec:\n      apiVersion: {api_version}\n      command: {shim}\n      args: [{args}]\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n      installHint: broker-shim is part of token-broker.\n",
            shim = binaries().shim.display(),
            args = args.join(", "),
        )
    };
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n{v1}{beta}contexts:\n- name: v1\n  context: {{cluster: fake, user: v1}}\n- name: v1beta1\n  context: {{cluster: fake, user: v1beta1}}\ncurrent-context: v1\n",
        server = api.url(),
        v1 = user("v1", EXEC_V1),
        beta = user("v1beta1", EXEC_V1BETA1),
    );
    let path = sandbox.home.join(".kube/config");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, config).unwrap();
    path
}

fn kubectl(sandbox: &Sandbox, config: &std::path::Path, context: &str) -> Output {
    sandbox
        .command(std::path::Path::new("kubectl"))
        .arg("--kubeconfig")
        .arg(config)
        .args(["--context", context, "get", "--raw", "/api"])
        .output()
        .expect("kubectl runs")
}

#[test]
fn kubectl_gets_api_through_the_shim_with_both_exec_api_versions() {
    if !require("kubectl", on_path("kubectl")) {
        return;
    }
    let mock = fast_mock();
    let api = FakeApiServer::start(mock.shared_state());
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let config = kubeconfig(&sandbox, &api, &mock);

    // Before any login: kubectl fails, and says what to run (stdin is not a terminal).
    let err = failure(&kubectl(&sandbox, &config, "v1"), "kubectl before login");
    assert!(err.contains("brokerctl login --server-id"), "{err}");
    assert!(api.requests().iter().all(|r| !r.authorized));

    device_login(&sandbox, &mock);
    for context in ["v1", "v1beta1"] {
        let out = success(
            &kubectl(&sandbox, &config, context),
            "kubectl get --raw /api",
        );
        let body: serde_json::Value = serde_json::from_str(&out).expect("JSON from the API");
        assert_eq!(body["kind"], "APIVersions", "{out}");
    }
    // Every request kubectl made carried a token the mock signed for the signed-in user
    // (kubectl may also ask for /version on its own).
    let seen = api.requests();
    assert!(seen.iter().all(|r| r.authorized), "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| r.subject.as_deref() == Some("alice@contoso.example"))
    );
    assert_eq!(
        seen.iter().filter(|r| r.path == "/api").count(),
        2,
        "{seen:?}"
    );
}
