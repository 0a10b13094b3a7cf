//! Tokens from the Azure command-line tools the user is already signed in to: `az account
//! get-access-token` (kubelogin's `azurecli`) and `azd auth token` (`azd`). brokerd runs them
//! ahead of need, so kubectl never waits for them.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::token::{AccessToken, TokenSet};
use super::{ErrorClass, IdentityError};

/// How long one run of `az` or `azd` may take (kubelogin's default is 30 s too).
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    AzureCli,
    AzureDeveloperCli,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::AzureCli => "az",
            Tool::AzureDeveloperCli => "azd",
        }
    }

    fn login_hint(self) -> &'static str {
        match self {
            Tool::AzureCli => "az login",
            Tool::AzureDeveloperCli => "azd auth login",
        }
    }

    fn args(self, request: &CliRequest<'_>) -> Vec<String> {
        let (server_id, tenant) = (request.server_id, request.tenant);
        let mut args: Vec<String> = match self {
            Tool::AzureCli => [
                "account",
                "get-access-token",
                "--resource",
                server_id,
                "-o",
                "json",
            ]
            .map(String::from)
            .to_vec(),
            Tool::AzureDeveloperCli => vec![
                "auth".into(),
                "token".into(),
                "--output".into(),
                "json".into(),
                "--scope".into(),
                format!("{server_id}/.default"),
            ],
        };
        if !tenant.is_empty() {
            args.push(match self {
                Tool::AzureCli => "--tenant".into(),
                Tool::AzureDeveloperCli => "--tenant-id".into(),
            });
            args.push(tenant.into());
        }
        if self == Tool::AzureCli && !request.subscription.is_empty() {
            args.push("--subscription".into());
            args.push(request.subscription.into());
        }
        args
    }
}

/// `az account get-access-token -o json`: `expires_on` (Unix seconds, a number or a string) in
/// current versions; older ones only give `expiresOn` in local time, which is not trusted here.
#[derive(Deserialize)]
struct AzAnswer {
    #[serde(rename = "accessToken")]
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

/// `azd auth token --output json`: `expiresOn` in RFC 3339.
#[derive(Deserialize)]
struct AzdAnswer {
    token: String,
    #[serde(rename = "expiresOn", default)]
    expires_on: Option<String>,
}

/// What one run of a tool is asked for.
#[derive(Clone, Copy, Debug)]
pub struct CliRequest<'a> {
    pub tool: Tool,
    pub server_id: &'a str,
    /// Empty: the tool's default tenant.
    pub tenant: &'a str,
    /// `az --subscription`; empty for none.
    pub subscription: &'a str,
    /// The Azure CLI's configuration directory (`AZURE_CONFIG_DIR`), when not its default.
    pub config_dir: Option<&'a std::path::Path>,
}

pub(super) async fn acquire(
    request: &CliRequest<'_>,
    now: SystemTime,
) -> Result<TokenSet, IdentityError> {
    let tool = request.tool;
    let program = tool.program();
    let failed = |message: String, class| IdentityError::Cli {
        tool: program,
        message,
        class,
    };
    let mut command = tokio::process::Command::new(program);
    if let Some(dir) = request.config_dir {
        command.env("AZURE_CONFIG_DIR", dir);
    }
    let child = command
        .args(tool.args(request))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                failed(
                    format!("`{program}` is not on brokerd's PATH; install it, or start brokerd with it on PATH"),
                    ErrorClass::Config,
                )
            } else {
                failed(format!("cannot run `{program}`: {e}"), ErrorClass::Transient)
            }
        })?;
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(
                format!("`{program}` did not answer within {} s", TIMEOUT.as_secs()),
                ErrorClass::Transient,
            )
        })?
        .map_err(|e| failed(format!("`{program}` failed: {e}"), ErrorClass::Transient))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        let first = broker_proto::text::printable(first)
            .chars()
            .take(300)
            .collect::<String>();
        let signed_out = stderr.contains(tool.login_hint()) || stderr.contains("not logged in");
        return Err(failed(
            if signed_out {
                format!("{first} (run `{}`)", tool.login_hint())
            } else {
                first
            },
            if signed_out {
                ErrorClass::LoginRequired
            } else {
                ErrorClass::Transient
            },
        ));
    }
    let malformed = |e: serde_json::Error| {
        IdentityError::Malformed(format!(
            "`{program}` printed something that is not its JSON answer ({:?} error)",
            e.classify()
        ))
    };
    let (token, expires_at) = match tool {
        Tool::AzureCli => {
            let answer: AzAnswer = serde_json::from_slice(&output.stdout).map_err(malformed)?;
            let expires_at = answer.expires_on.as_ref().and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            });
            (
                answer.access_token,
                expires_at.and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))),
            )
        }
        Tool::AzureDeveloperCli => {
            let answer: AzdAnswer = serde_json::from_slice(&output.stdout).map_err(malformed)?;
            let expires_at = answer.expires_on.as_deref().and_then(|t| {
                humantime::parse_rfc3339(t)
                    .or_else(|_| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')))
                    .ok()
            });
            (answer.token, expires_at)
        }
    };
    Ok(TokenSet {
        access: AccessToken::expiring_at(
            token.into(),
            now,
            expires_at.unwrap_or(now + super::ASSUMED_LIFETIME),
        ),
        refresh: None,
        refresh_in: None,
        account: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_match_what_kubelogin_runs() {
        let request = |tool, tenant, subscription| CliRequest {
            tool,
            server_id: "srv",
            tenant,
            subscription,
            config_dir: None,
        };
        let args = |r: CliRequest<'_>| r.tool.args(&r).join(" ");
        assert_eq!(
            args(request(Tool::AzureCli, "tid", "")),
            "account get-access-token --resource srv -o json --tenant tid"
        );
        assert_eq!(
            args(request(Tool::AzureCli, "", "My Subscription")),
            "account get-access-token --resource srv -o json --subscription My Subscription"
        );
        assert_eq!(
            args(request(Tool::AzureDeveloperCli, "", "ignored")),
            "auth token --output json --scope srv/.default"
        );
    }
}
