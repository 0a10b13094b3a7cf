//! Azure Pipelines' workload identity federation (kubelogin's `azurepipelines`): the job's
//! `SYSTEM_ACCESSTOKEN` buys an OIDC token for a service connection from
//! `SYSTEM_OIDCREQUESTURI`, and that token is the client assertion of a client credentials
//! grant, as workload identity's federated token is.
//!
//! The request is azidentity's (`AzurePipelinesCredential`): `POST {uri}?api-version=7.1&
//! serviceConnectionId={id}` with the access token as bearer and an empty JSON body; the
//! answer is `{"oidcToken": "…"}`. The OIDC token lives minutes, so it is asked for anew at
//! every grant and never kept.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::IdentityError;
use super::http::IdpHttp;

/// `SYSTEM_OIDCREQUESTURI` and `SYSTEM_ACCESSTOKEN`, as the caller's environment gave them.
#[derive(Clone)]
pub struct PipelineCredential {
    pub request_uri: url::Url,
    pub access_token: SecretString,
}

impl std::fmt::Debug for PipelineCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineCredential")
            .field("request_uri", &self.request_uri.as_str())
            .finish_non_exhaustive()
    }
}

impl PartialEq for PipelineCredential {
    fn eq(&self, other: &Self) -> bool {
        self.request_uri == other.request_uri
            && self.access_token.expose_secret() == other.access_token.expose_secret()
    }
}

impl PipelineCredential {
    /// Checks the endpoint before the job's token is ever sent to it: https, or http to a
    /// loopback address (a test's stand-in).
    pub fn new(request_uri: &str, access_token: SecretString) -> Result<Self, String> {
        let url = url::Url::parse(request_uri.trim())
            .map_err(|e| format!("SYSTEM_OIDCREQUESTURI is not a URL: {e}"))?;
        let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || url.host_str() == Some("localhost");
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(
                    "SYSTEM_OIDCREQUESTURI must be an https URL: the job's access token is sent \
                     to it"
                        .into(),
                );
            }
        }
        if access_token.expose_secret().trim().is_empty() {
            return Err("SYSTEM_ACCESSTOKEN is empty".into());
        }
        Ok(PipelineCredential {
            request_uri: url,
            access_token,
        })
    }
}

#[derive(Deserialize)]
struct OidcAnswer {
    #[serde(rename = "oidcToken")]
    oidc_token: Option<String>,
}

/// The service connection's OIDC token, to present as a client assertion.
pub(super) async fn oidc_token(
    http: &IdpHttp,
    credential: &PipelineCredential,
    service_connection_id: &str,
) -> Result<String, IdentityError> {
    let mut url = credential.request_uri.clone();
    url.query_pairs_mut()
        .append_pair("api-version", "7.1")
        .append_pair("serviceConnectionId", service_connection_id);
    let request = http::Request::post(url.as_str())
        .header(
            "Authorization",
            format!("Bearer {}", credential.access_token.expose_secret()),
        )
        .header("Content-Type", "application/json")
        .body(Vec::new())
        .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
    let response = http.fetch(request).await?;
    let status = response.status().as_u16();
    if status != 200 {
        // Azure DevOps answers 401/403 for an expired job token or a connection the pipeline
        // may not use; neither a retry nor a login fixes that.
        return Err(IdentityError::Credential(format!(
            "Azure Pipelines refused the OIDC token request for service connection \
             {service_connection_id} (HTTP {status}); check that the pipeline may use it and \
             that SYSTEM_ACCESSTOKEN is mapped into the step's environment"
        )));
    }
    let answer: OidcAnswer = serde_json::from_slice(response.body()).map_err(|_| {
        IdentityError::Malformed("Azure Pipelines' OIDC answer is not the JSON expected".into())
    })?;
    answer
        .oidc_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| IdentityError::Malformed("Azure Pipelines' answer has no oidcToken".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_token_goes_only_to_https_or_loopback() {
        let token = || SecretString::from("job-token");
        assert!(PipelineCredential::new("https://dev.azure.com/org/_apis/x", token()).is_ok());
        assert!(PipelineCredential::new("http://127.0.0.1:8080/oidc", token()).is_ok());
        for bad in ["http://dev.azure.com/x", "ftp://x", "not a url"] {
            let err = PipelineCredential::new(bad, token()).unwrap_err();
            assert!(!err.contains("job-token"), "{err}");
        }
        assert!(PipelineCredential::new("https://x/", SecretString::from(" ")).is_err());
    }

    #[test]
    fn debug_hides_the_job_token() {
        let c = PipelineCredential::new("https://x/", SecretString::from("job-token")).unwrap();
        assert!(!format!("{c:?}").contains("job-token"));
    }
}
