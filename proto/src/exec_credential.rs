//! The client-go exec credential protocol: what kubectl tells the plugin in
//! `KUBERNETES_EXEC_INFO`, and the ExecCredential the plugin prints.

use serde::{Deserialize, Serialize};

pub const V1: &str = "client.authentication.k8s.io/v1";
pub const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What kubectl said about this run.
#[derive(Debug, PartialEq, Eq)]
pub struct ExecInfo {
    /// The apiVersion the answer must carry.
    pub api_version: &'static str,
    /// Whether stdin is the user's terminal, so the plugin may prompt.
    pub interactive: bool,
}

#[derive(Deserialize)]
struct ExecInfoJson {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    spec: SpecJson,
}

#[derive(Deserialize, Default)]
struct SpecJson {
    #[serde(default)]
    interactive: bool,
}

/// Reads `KUBERNETES_EXEC_INFO`. Without it (kubelogin's behaviour, and a run by hand) the
/// answer is v1beta1, and prompting is allowed when stdin is a terminal.
pub fn exec_info(variable: Option<&str>, stdin_is_terminal: bool) -> Result<ExecInfo, String> {
    let Some(text) = variable.filter(|t| !t.trim().is_empty()) else {
        return Ok(ExecInfo {
            api_version: V1BETA1,
            interactive: stdin_is_terminal,
        });
    };
    let info: ExecInfoJson = serde_json::from_str(text)
        .map_err(|e| format!("KUBERNETES_EXEC_INFO is not valid JSON: {e}"))?;
    let api_version = match info.api_version.as_str() {
        V1 => V1,
        V1BETA1 | "" => V1BETA1,
        other => {
            return Err(format!(
                "KUBERNETES_EXEC_INFO asks for apiVersion {other:?}; broker-shim speaks {V1} and {V1BETA1}"
            ));
        }
    };
    Ok(ExecInfo {
        api_version,
        interactive: info.spec.interactive,
    })
}

#[derive(Serialize)]
struct ExecCredential<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    status: Status<'a>,
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(rename = "expirationTimestamp")]
    expiration_timestamp: String,
    token: &'a str,
}

/// The last second RFC 3339 can write (the end of year 9999).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// `unix` (seconds) as RFC 3339 in UTC, clamped to what the format can say: a time before
/// 1970 is the epoch, one after year 9999 is its last second. Never panics, whatever the
/// number (humantime's formatter fails past 9999).
pub fn rfc3339(unix: i64) -> String {
    let seconds = u64::try_from(unix).unwrap_or(0).min(LAST_RFC3339_SECOND);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The ExecCredential JSON for `token`, expiring at `expires_at_unix` (RFC 3339, UTC).
pub fn exec_credential(api_version: &str, token: &str, expires_at_unix: i64) -> String {
    let credential = ExecCredential {
        api_version,
        kind: "ExecCredential",
        status: Status {
            expiration_timestamp: rfc3339(expires_at_unix),
            token,
        },
    };
    // Serialising plain strings into a String cannot fail.
    serde_json::to_string(&credential).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_expiry_formats_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert!(exec_credential(V1, "t", i64::MAX).contains("9999-12-31T23:59:59Z"));
    }

    #[test]
    fn reads_what_kubectl_sends() {
        let v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":true}}"#;
        assert_eq!(
            exec_info(Some(v1), false).unwrap(),
            ExecInfo {
                api_version: V1,
                interactive: true
            }
        );
        let beta = r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false,"cluster":{"server":"https://x","config":null}}}"#;
        assert_eq!(
            exec_info(Some(beta), true).unwrap(),
            ExecInfo {
                api_version: V1BETA1,
                interactive: false
            }
        );
    }

    #[test]
    fn absent_means_v1beta1_and_the_terminal_decides() {
        assert_eq!(
            exec_info(None, true).unwrap(),
            ExecInfo {
                api_version: V1BETA1,
                interactive: true
            }
        );
        assert_eq!(
            exec_info(Some(""), false).unwrap(),
            ExecInfo {
                api_version: V1BETA1,
                interactive: false
            }
        );
    }

    #[test]
    fn rejects_what_it_cannot_answer() {
        assert!(
            exec_info(Some("{"), false)
                .unwrap_err()
                .starts_with("KUBERNETES_EXEC_INFO is not valid JSON")
        );
        let alpha = r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#;
        assert!(
            exec_info(Some(alpha), false)
                .unwrap_err()
                .contains("v1alpha1")
        );
    }

    #[test]
    fn writes_the_credential_kubectl_decodes() {
        let out = exec_credential(V1, "tok\"en", 1_700_000_000);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["apiVersion"], V1);
        assert_eq!(value["kind"], "ExecCredential");
        assert_eq!(value["status"]["token"], "tok\"en");
        assert_eq!(
            value["status"]["expirationTimestamp"],
            "2023-11-14T22:13:20Z"
        );
    }
}
