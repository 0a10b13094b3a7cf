//! Where a session's endpoints are. Entra's follow from the authority and tenant; any other
//! OpenID Connect issuer says where its are in its discovery document
//! (`{issuer}/.well-known/openid-configuration`, OpenID Connect Discovery 1.0), which is read
//! once an hour per issuer and checked before any secret goes to what it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::cloud::Authority;
use super::http::IdpHttp;
use super::{IdentityError, Target};

/// How long a discovery document is trusted before it is read again.
const KEEP: Duration = Duration::from_secs(3600);

/// A session's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
    /// RFC 8628's device authorization endpoint, when the issuer has one.
    pub device: Option<String>,
    /// RFC 7009's revocation endpoint, when the issuer has one.
    pub revocation: Option<String>,
}

impl Endpoints {
    /// Entra's, under `{authority}/{tenant}/oauth2/v2.0/`. Entra has no revocation endpoint
    /// for refresh tokens.
    pub fn entra(target: &Target) -> Self {
        let endpoint = |name: &str| target.authority.endpoint(&target.tenant, name);
        Endpoints {
            authorize: endpoint("authorize"),
            token: endpoint("token"),
            device: Some(endpoint("devicecode")),
            revocation: None,
        }
    }
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
}

/// Discovery documents read, by issuer.
#[derive(Clone, Default)]
pub struct Discovered {
    documents: Arc<Mutex<HashMap<String, (Instant, Endpoints)>>>,
}

impl Discovered {
    /// The endpoints of `issuer`, from the cache or read now.
    pub async fn endpoints(
        &self,
        http: &IdpHttp,
        issuer: &str,
    ) -> Result<Endpoints, IdentityError> {
        if let Some((read, endpoints)) = self.lock().get(issuer)
            && read.elapsed() < KEEP
        {
            return Ok(endpoints.clone());
        }
        let endpoints = read(http, issuer).await?;
        self.lock()
            .insert(issuer.to_string(), (Instant::now(), endpoints.clone()));
        Ok(endpoints)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Endpoints)>> {
        self.documents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn read(http: &IdpHttp, issuer: &str) -> Result<Endpoints, IdentityError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let request = http::Request::get(&url)
        .header("Accept", "application/json")
        .body(Vec::new())
        .map_err(|e| IdentityError::InvalidEndpoint(e.to_string()))?;
    let response = http.fetch(request).await?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(IdentityError::InvalidEndpoint(format!(
            "the issuer {issuer} has no discovery document ({url} answered HTTP {status})"
        )));
    }
    let document: Document = serde_json::from_slice(response.body()).map_err(|_| {
        IdentityError::Malformed(format!(
            "the discovery document at {url} is not the JSON OpenID Connect Discovery describes"
        ))
    })?;
    check(issuer, document)
}

/// OpenID Connect Discovery §4.3: the document's issuer is the one asked about, else another
/// party answered. Every endpoint is https (http only on loopback) before anything is sent.
fn check(issuer: &str, document: Document) -> Result<Endpoints, IdentityError> {
    if document.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(IdentityError::InvalidEndpoint(format!(
            "the discovery document of {issuer} names another issuer ({}); refusing it",
            broker_proto::text::printable(&document.issuer)
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    let checked = |what: &str, value: String| -> Result<String, IdentityError> {
        Authority::from_host(&value)
            .map(|_| value.clone())
            .map_err(|_| {
                IdentityError::InvalidEndpoint(format!(
                    "the issuer's {what} is not an https URL (http only for loopback): {}",
                    broker_proto::text::printable(&value)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ))
            })
    };
    let optional = |what: &str, value: Option<String>| value.map(|v| checked(what, v)).transpose();
    Ok(Endpoints {
        token: checked("token endpoint", document.token_endpoint)?,
        authorize: optional("authorization endpoint", document.authorization_endpoint)?
            .unwrap_or_default(),
        device: optional(
            "device authorization endpoint",
            document.device_authorization_endpoint,
        )?,
        revocation: optional("revocation endpoint", document.revocation_endpoint)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(issuer: &str, token: &str) -> Document {
        Document {
            issuer: issuer.into(),
            authorization_endpoint: Some(format!("{issuer}/protocol/openid-connect/auth")),
            token_endpoint: token.into(),
            device_authorization_endpoint: None,
            revocation_endpoint: Some(format!("{issuer}/protocol/openid-connect/revoke")),
        }
    }

    #[test]
    fn the_document_must_be_the_issuer_s_own_and_its_endpoints_https() {
        let issuer = "https://idp.example/realms/dev";
        let ok = check(
            issuer,
            document(issuer, "https://idp.example/realms/dev/token"),
        )
        .unwrap();
        assert_eq!(ok.token, "https://idp.example/realms/dev/token");
        assert!(ok.revocation.is_some() && ok.device.is_none());
        // A trailing slash on either side is the same issuer.
        assert!(
            check(
                &format!("{issuer}/"),
                document(issuer, "https://idp.example/t")
            )
            .is_ok()
        );
        let other = check(
            issuer,
            document("https://evil.example", "https://evil.example/t"),
        );
        assert!(
            other
                .unwrap_err()
                .to_string()
                .contains("names another issuer")
        );
        let plain = check(issuer, document(issuer, "http://idp.example/token"));
        assert!(plain.unwrap_err().to_string().contains("not an https URL"));
        assert!(
            check(
                "http://127.0.0.1:1/r",
                document("http://127.0.0.1:1/r", "http://127.0.0.1:1/t")
            )
            .is_ok()
        );
    }
}
