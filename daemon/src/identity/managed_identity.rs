//! Managed identity through the Azure Instance Metadata Service (IMDS): a GET on the VM's local
//! endpoint with `Metadata: true`; the answer's numbers come as strings. IMDS asks clients to
//! retry 404 (identity not yet available), 410 (upgrading), 429 and 5xx with backoff.

use std::time::Duration;

use serde::Deserialize;

use super::IdentityError;
use super::http::{HttpError, IdpHttp, retry_after};
use super::token::{AccessToken, TokenSet};

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const API_VERSION: &str = "2018-02-01";
/// Retries after the first try; the waits (0.5 s doubling) add up to about half a minute.
const RETRIES: u32 = 6;

/// Which identity to ask for.
#[derive(Clone, Copy, Debug)]
pub enum ManagedIdentityId<'a> {
    SystemAssigned,
    ClientId(&'a str),
    ResourceId(&'a str),
}

/// The IMDS token endpoint: `AZURE_POD_IDENTITY_AUTHORITY_HOST` (as azidentity reads it) moves
/// it, for pod identity and for tests.
pub fn endpoint() -> String {
    match std::env::var("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
        Ok(host) if !host.trim().is_empty() => format!(
            "{}/metadata/identity/oauth2/token",
            host.trim().trim_end_matches('/')
        ),
        _ => DEFAULT_ENDPOINT.to_string(),
    }
}

#[derive(Deserialize)]
struct ImdsAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<NumberOrText>,
}

#[derive(Deserialize)]
struct ImdsError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl NumberOrText {
    fn seconds(&self) -> Option<u64> {
        match self {
            NumberOrText::Number(n) => Some(*n),
            NumberOrText::Text(t) => t.trim().parse().ok(),
        }
    }
}

pub(super) async fn acquire(
    http: &IdpHttp,
    endpoint: &str,
    resource: &str,
    id: ManagedIdentityId<'_>,
    now: impl Fn() -> std::time::SystemTime,
) -> Result<TokenSet, IdentityError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| IdentityError::InvalidEndpoint(format!("IMDS endpoint {endpoint}: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("api-version", API_VERSION);
        query.append_pair("resource", resource);
        match id {
            ManagedIdentityId::SystemAssigned => {}
            ManagedIdentityId::ClientId(c) => {
                query.append_pair("client_id", c);
            }
            ManagedIdentityId::ResourceId(r) => {
                query.append_pair("msi_res_id", r);
            }
        }
    }
    let mut wait = Duration::from_millis(500);
    let mut attempt = 0;
    let response = loop {
        let request = http::Request::get(url.as_str())
            .header("Metadata", "true")
            .body(Vec::new())
            .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
        let pause = match http.fetch(request).await {
            Ok(response) if response.status() == http::StatusCode::OK => break response,
            Ok(response) => {
                let status = response.status().as_u16();
                let retryable = matches!(status, 404 | 410 | 429) || status >= 500;
                if !retryable || attempt >= RETRIES {
                    return Err(refusal(status, response.body()));
                }
                retry_after(response.headers()).unwrap_or(wait)
            }
            Err(_) if attempt < RETRIES => wait,
            Err(error) => return Err(error.into()),
        };
        tracing::debug!("IMDS: retrying in {} ms", pause.as_millis());
        tokio::time::sleep(pause.min(Duration::from_secs(30))).await;
        wait *= 2;
        attempt += 1;
    };
    let answer: ImdsAnswer = serde_json::from_slice(response.body())
        .map_err(|e| IdentityError::Malformed(format!("IMDS answer: {}", e.classify_message())))?;
    let lifetime = answer
        .expires_in
        .as_ref()
        .and_then(NumberOrText::seconds)
        .map(Duration::from_secs)
        .unwrap_or(super::ASSUMED_LIFETIME);
    Ok(TokenSet {
        access: AccessToken::expiring_in(answer.access_token.into(), now(), lifetime),
        refresh: None,
        refresh_in: None,
        account: None,
    })
}

fn refusal(status: u16, body: &[u8]) -> IdentityError {
    let detail = serde_json::from_slice::<ImdsError>(body)
        .map(|e| {
            broker_proto::text::printable(&format!("{}: {}", e.error, e.error_description))
                .into_owned()
        })
        .unwrap_or_else(|_| format!("HTTP {status}"));
    if status == 400 {
        // Unknown identity, missing resource: retrying cannot help.
        IdentityError::Credential(format!("managed identity (IMDS) refused: {detail}"))
    } else {
        IdentityError::Unavailable(HttpError::ServerFault {
            host: "IMDS".into(),
            status,
            retry_after: None,
        })
    }
}

trait ClassifyMessage {
    fn classify_message(&self) -> String;
}

impl ClassifyMessage for serde_json::Error {
    /// The kind of error and where, never the text that failed to parse (it may hold a token).
    fn classify_message(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}
