//! CI systems' OpenID Connect tokens, used as the client assertion of a client credentials
//! grant (workload identity federation), asked for anew at every grant and never kept: they
//! live minutes, and the job's own token that buys them lives as long as the job.
//!
//! - Azure Pipelines (kubelogin's `azurepipelines`): `POST {SYSTEM_OIDCREQUESTURI}?api-version=
//!   7.1&serviceConnectionId={id}` with `SYSTEM_ACCESSTOKEN` as bearer answers
//!   `{"oidcToken": "…"}` (azidentity's `AzurePipelinesCredential`).
//! - GitHub Actions (kubelogin's `workloadidentity` when `ACTIONS_ID_TOKEN_REQUEST_TOKEN` and
//!   `_URL` are set): `GET {ACTIONS_ID_TOKEN_REQUEST_URL}&audience=api://AzureADTokenExchange`
//!   with the request token as bearer answers `{"value": "…"}`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::IdentityError;
use super::http::IdpHttp;

/// The audience Entra's federated credentials expect.
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Where a CI job gets its OIDC token, and the job's token that pays for it.
#[derive(Clone)]
pub struct CiCredential {
    pub system: CiSystem,
    pub endpoint: url::Url,
    pub job_token: SecretString,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiSystem {
    AzurePipelines,
    GitHubActions,
}

impl CiSystem {
    /// The variables the job's environment names them by, for messages.
    fn variables(self) -> (&'static str, &'static str) {
        match self {
            CiSystem::AzurePipelines => ("SYSTEM_OIDCREQUESTURI", "SYSTEM_ACCESSTOKEN"),
            CiSystem::GitHubActions => (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            CiSystem::AzurePipelines => "Azure Pipelines",
            CiSystem::GitHubActions => "GitHub Actions",
        }
    }
}

impl std::fmt::Debug for CiCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiCredential")
            .field("system", &self.system)
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl PartialEq for CiCredential {
    fn eq(&self, other: &Self) -> bool {
        self.system == other.system
            && self.endpoint == other.endpoint
            && self.job_token.expose_secret() == other.job_token.expose_secret()
    }
}

impl CiCredential {
    /// Checks the endpoint before the job's token is ever sent to it: https, or http to a
    /// loopback address (a test's stand-in).
    pub fn new(system: CiSystem, endpoint: &str, job_token: SecretString) -> Result<Self, String> {
        let (endpoint_variable, token_variable) = system.variables();
        let url = url::Url::parse(endpoint.trim())
            .map_err(|e| format!("{endpoint_variable} is not a URL: {e}"))?;
        let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || url.host_str() == Some("localhost");
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "{endpoint_variable} must be an https URL: the job's token is sent to it"
                ));
            }
        }
        if job_token.expose_secret().trim().is_empty() {
            return Err(format!("{token_variable} is empty"));
        }
        Ok(CiCredential {
            system,
            endpoint: url,
            job_token,
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "oidcToken")]
    oidc_token: Option<String>,
    value: Option<String>,
}

/// The job's OIDC token, to present as a client assertion. `service_connection_id` is Azure
/// Pipelines' (ignored for GitHub Actions).
pub(super) async fn oidc_token(
    http: &IdpHttp,
    credential: &CiCredential,
    service_connection_id: &str,
) -> Result<String, IdentityError> {
    let mut url = credential.endpoint.clone();
    let bearer = format!("Bearer {}", credential.job_token.expose_secret());
    let request = match credential.system {
        CiSystem::AzurePipelines => {
            url.query_pairs_mut()
                .append_pair("api-version", "7.1")
                .append_pair("serviceConnectionId", service_connection_id);
            http::Request::post(url.as_str())
                .header("Authorization", bearer)
                .header("Content-Type", "application/json")
                .body(Vec::new())
        }
        CiSystem::GitHubActions => {
            url.query_pairs_mut()
                .append_pair("audience", EXCHANGE_AUDIENCE);
            http::Request::get(url.as_str())
                .header("Authorization", bearer)
                .header("Accept", "application/json; api-version=2.0")
                .body(Vec::new())
        }
    }
    .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
    let response = http.fetch(request).await?;
    let status = response.status().as_u16();
    let name = credential.system.name();
    if status != 200 {
        // An expired job token, or a connection the job may not use: neither a retry nor a
        // login fixes that.
        let (_, token_variable) = credential.system.variables();
        return Err(IdentityError::Credential(format!(
            "{name} refused the OIDC token request (HTTP {status}); check that the job may ask \
             for one and that {token_variable} is in the step's environment{}",
            match credential.system {
                CiSystem::AzurePipelines =>
                    format!(" (service connection {service_connection_id})"),
                CiSystem::GitHubActions => " (permissions: id-token: write)".into(),
            }
        )));
    }
    let answer: Answer = serde_json::from_slice(response.body()).map_err(|_| {
        IdentityError::Malformed(format!("{name}'s OIDC answer is not the JSON expected"))
    })?;
    answer
        .oidc_token
        .or(answer.value)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| IdentityError::Malformed(format!("{name}'s answer has no token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_token_goes_only_to_https_or_loopback() {
        let token = || SecretString::from("job-token");
        for system in [CiSystem::AzurePipelines, CiSystem::GitHubActions] {
            assert!(
                CiCredential::new(system, "https://dev.azure.com/org/_apis/x", token()).is_ok()
            );
            assert!(CiCredential::new(system, "http://127.0.0.1:8080/oidc", token()).is_ok());
            for bad in ["http://dev.azure.com/x", "ftp://x", "not a url"] {
                let err = CiCredential::new(system, bad, token()).unwrap_err();
                assert!(!err.contains("job-token"), "{err}");
            }
            assert!(CiCredential::new(system, "https://x/", SecretString::from(" ")).is_err());
        }
        let err = CiCredential::new(CiSystem::GitHubActions, "http://x/", token()).unwrap_err();
        assert!(err.starts_with("ACTIONS_ID_TOKEN_REQUEST_URL"), "{err}");
    }

    #[test]
    fn debug_hides_the_job_token() {
        let c = CiCredential::new(
            CiSystem::GitHubActions,
            "https://x/",
            SecretString::from("job-token"),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("job-token"));
    }
}
