//! The steps and assertions tests share: a device login through brokerctl, the shim's
//! ExecCredential, exit codes, and the scan for tokens where none may be.

use std::process::Output;

use serde_json::Value;

use super::{Sandbox, block_on};
use crate::mock_entra::{AKS_SERVER_ID, MockConfig, MockEntra, TENANT_ID};

/// `KUBERNETES_EXEC_INFO` as kubectl sets it.
pub fn exec_info(api_version: &str, interactive: bool) -> String {
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": api_version,
        "spec": { "interactive": interactive },
    })
    .to_string()
}

/// stdout of a finished process as text, asserting it succeeded.
pub fn success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a finished process as text, asserting it failed with exit code 1.
pub fn failure(output: &Output, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what} should exit 1:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A mock Entra ID as tests want it: it asks clients to poll every second instead of Entra's
/// five, so device logins finish quickly.
pub fn fast_mock() -> MockEntra {
    MockEntra::start(MockConfig {
        device_code_interval: 1,
        ..MockConfig::default()
    })
}

/// The session flags for the AKS server in the test tenant, at `mock`.
pub fn session_args(mock: &MockEntra) -> Vec<String> {
    vec![
        "--server-id".into(),
        AKS_SERVER_ID.into(),
        "--tenant-id".into(),
        TENANT_ID.into(),
        "--authority-host".into(),
        mock.authority_host(),
    ]
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Signs in with the device code flow through `brokerctl login`, approving the code at the
/// mock as the user would; returns the `logged_in` event.
pub fn device_login(sandbox: &Sandbox, mock: &MockEntra) -> Value {
    let args = session_args(mock);
    let mut login = sandbox.start_login(&as_strs(&args));
    let code = login.next_event();
    assert_eq!(code["event"], "device_code", "{code}");
    let user_code = code["user_code"].as_str().expect("user_code");
    assert!(
        mock.approve(user_code),
        "the mock knows the code {user_code}"
    );
    let done = login.next_event();
    assert_eq!(done["event"], "logged_in", "{done}");
    let (status, stderr) = login.finish();
    assert!(status.success(), "brokerctl login failed: {stderr}");
    done
}

/// The ExecCredential a successful shim run printed.
pub fn credential(output: &Output) -> Value {
    let stdout = success(output, "broker-shim");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Asserts that brokerd's log holds none of the tokens the mock issued.
pub fn assert_no_tokens_in(text: &str, mock: &MockEntra, what: &str) {
    for token in mock
        .issued_refresh_tokens()
        .iter()
        .chain(mock.issued_access_tokens().iter())
    {
        assert!(!text.contains(token.as_str()), "{what} contains a token");
        // A JWT's signature part alone is still the secret part.
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!text.contains(signature), "{what} contains part of a token");
        }
    }
}

/// The reason brokerd gives for refusing a GetToken, asked over gRPC as broker-shim asks.
pub fn get_token_reason(
    sandbox: &Sandbox,
    spec: broker_proto::v1::SessionSpec,
    credentials: broker_proto::v1::Credentials,
) -> Result<String, (broker_proto::v1::ErrorReason, String)> {
    let socket = sandbox.socket.clone();
    block_on(async move {
        let mut client = broker_proto::connect(&socket)
            .await
            .expect("brokerd answers");
        match client
            .get_token(broker_proto::v1::GetTokenRequest {
                spec: Some(spec),
                credentials: Some(credentials),
                interactive: false,
            })
            .await
        {
            Ok(answer) => Ok(answer.into_inner().session_id),
            Err(status) => Err((
                broker_proto::error_reason(&status),
                broker_proto::error_message(&status),
            )),
        }
    })
}

/// The browser's part of an interactive login: follow the authorize URL, let the mock sign the
/// user in, follow its redirect to brokerd's loopback listener.
pub fn browse(url: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_defaults();
    match agent.get(url).call() {
        Ok(mut response) => (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("the browser could not load {url}: {e}"),
    }
}
