//! Applications that authenticate themselves (the client credentials grant with a secret, a
//! certificate assertion or a federated assertion), users who give a password (ROPC), and the
//! managed identities of the Instance Metadata Service, as Entra and IMDS answer them.

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};

use super::errors::{entra_error, guid, json_response, now_unix};
use super::state::{GrantBase, Refusal, State, URL_SAFE, is_guid, random_text};
use crate::jwt::AccessClaims;

/// The audience workload identity tokens must be issued for.
pub const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The subject of the OIDC tokens Azure DevOps issues for a service connection.
pub fn pipeline_subject(connection_id: &str) -> String {
    format!("sc://contoso/project/{connection_id}")
}

/// A confidential client: how it may prove itself.
#[derive(Clone, Debug, Default)]
pub struct App {
    pub secret: Option<String>,
    /// The registered certificate: its SHA-256 thumbprint (base64url) and its RSA public key
    /// (PKCS#1 DER).
    pub certificate: Option<(String, Vec<u8>)>,
    /// A federated credential: the issuer and subject of the tokens it accepts.
    pub federated: Option<(String, String)>,
}

/// A managed identity IMDS can issue tokens for.
#[derive(Clone, Debug)]
pub struct ManagedIdentity {
    pub client_id: String,
    /// The ARM resource id of a user-assigned identity; `None` for the system-assigned one.
    pub resource_id: Option<String>,
}

impl ManagedIdentity {
    pub fn system_assigned() -> Self {
        ManagedIdentity {
            client_id: "99999999-9999-9999-9999-999999999999".into(),
            resource_id: None,
        }
    }
}

fn refuse(status: StatusCode, error: &str, code: u32, text: &str) -> Refusal {
    Box::new(entra_error(status, error, code, text, None))
}

fn invalid_client(code: u32, text: &str) -> Refusal {
    refuse(StatusCode::UNAUTHORIZED, "invalid_client", code, text)
}

/// The parts of a compact JWS, decoded: header, claims, and the signing input.
fn decode_jws(token: &str) -> Option<(Value, Value, String, Vec<u8>)> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&b64.decode(c).ok()?).ok()?;
    Some((header, claims, format!("{h}.{c}"), b64.decode(s).ok()?))
}

impl State {
    /// The client credentials grant.
    pub fn client_credentials(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        let client_id = form.get("client_id").cloned().unwrap_or_default();
        let app = self.lock().apps.get(&client_id).cloned().ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
            )
        })?;
        let scope = form.get("scope").cloned().unwrap_or_default();
        let resource = scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                )
            })?
            .to_string();
        // OIDC scopes next to .default are tolerated, as Entra does.
        if !self.knows_resource(&resource) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                500011,
                &format!(
                    "The resource principal named {resource} was not found in the tenant named {tenant}."
                ),
            ));
        }

        if let Some(secret) = form.get("client_secret") {
            if app.secret.as_deref() != Some(secret.as_str()) {
                return Err(invalid_client(
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                ));
            }
        } else if let Some(assertion) = form.get("client_assertion") {
            if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type.",
                ));
            }
            self.check_assertion(tenant, &client_id, &app, assertion)?;
        } else {
            return Err(invalid_client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        self.bump("client_credentials_ok");
        let lifetime = self.lock().config.access_token_lifetime;
        Ok(self.app_token(
            tenant,
            &client_id,
            &resource,
            lifetime,
            super::state::pop_cnf(form),
        ))
    }

    /// A certificate assertion (header names the certificate's thumbprint) or a federated one
    /// (a token from the registered federation issuer).
    fn check_assertion(
        &self,
        tenant: &str,
        client_id: &str,
        app: &App,
        assertion: &str,
    ) -> Result<(), Refusal> {
        let (header, claims, signing_input, signature) = decode_jws(assertion)
            .ok_or_else(|| invalid_client(50012, "Client assertion is not a valid JWT."))?;
        let now = now_unix();
        let exp = claims["exp"].as_u64().unwrap_or(0);
        let thumbprint = header["x5t#S256"].as_str().or(header["x5t"].as_str());
        if let Some(thumbprint) = thumbprint {
            let (registered, public_key) = app.certificate.clone().ok_or_else(|| {
                invalid_client(700027, "Client assertion failed signature validation. [Reason - The key was not found.]")
            })?;
            if thumbprint != registered {
                return Err(invalid_client(
                    700027,
                    "Client assertion failed signature validation. [Reason - The key was not found.]",
                ));
            }
            let algorithm: &dyn ring::signature::VerificationAlgorithm = match header["alg"]
                .as_str()
            {
                Some("PS256") => &ring::signature::RSA_PSS_2048_8192_SHA256,
                Some("RS256") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                _ => {
                    return Err(invalid_client(
                        700027,
                        "Client assertion failed signature validation. [Reason - The algorithm is not supported.]",
                    ));
                }
            };
            ring::signature::UnparsedPublicKey::new(algorithm, &public_key)
                .verify(signing_input.as_bytes(), &signature)
                .map_err(|_| {
                    invalid_client(700027, "Client assertion contains an invalid signature.")
                })?;
            let audience = format!("{}/{tenant}/oauth2/v2.0/token", self.base_url);
            if claims["aud"].as_str() != Some(audience.as_str()) {
                return Err(invalid_client(
                    700021,
                    &format!(
                        "Client assertion audience claim does not match Realm issuer. Expected {audience}."
                    ),
                ));
            }
            if claims["iss"].as_str() != Some(client_id)
                || claims["sub"].as_str() != Some(client_id)
            {
                return Err(invalid_client(
                    700023,
                    "Client assertion issuer and subject must be the client id.",
                ));
            }
            if exp <= now || exp > now + 86_400 || claims["jti"].as_str().is_none() {
                return Err(invalid_client(
                    700024,
                    "Client assertion is not within its valid time range.",
                ));
            }
            return Ok(());
        }
        // A federated token: signed by the registered issuer, for the exchange audience.
        let (issuer, subject) = app.federated.clone().ok_or_else(|| {
            invalid_client(
                70021,
                "No matching federated identity record found for presented assertion.",
            )
        })?;
        self.federation_key
            .verify_signature(assertion)
            .map_err(|_| {
                invalid_client(700027, "Client assertion contains an invalid signature.")
            })?;
        if claims["iss"].as_str() != Some(issuer.as_str())
            || claims["sub"].as_str() != Some(subject.as_str())
        {
            return Err(invalid_client(
                70021,
                "No matching federated identity record found for presented assertion issuer and subject.",
            ));
        }
        let audience_ok = match &claims["aud"] {
            Value::String(a) => a == FEDERATION_AUDIENCE,
            Value::Array(list) => list.iter().any(|a| a.as_str() == Some(FEDERATION_AUDIENCE)),
            _ => false,
        };
        if !audience_ok {
            return Err(invalid_client(
                700212,
                &format!(
                    "No matching federated identity record found for presented assertion audience. Expected {FEDERATION_AUDIENCE}."
                ),
            ));
        }
        if exp <= now {
            return Err(invalid_client(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        Ok(())
    }

    /// An access token for an application (no user claims), as the answer Entra gives.
    fn app_token(
        &self,
        tenant: &str,
        client_id: &str,
        resource: &str,
        lifetime: u64,
        cnf: Option<Value>,
    ) -> Value {
        let now = now_unix();
        let tid = if is_guid(tenant) {
            tenant.to_string()
        } else {
            self.lock().config.user.home_tenant.clone()
        };
        let claims = AccessClaims {
            aud: resource.to_string(),
            iss: format!("{}/{tid}/v2.0", self.base_url),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            tid,
            oid: format!("sp-{client_id}"),
            sub: format!("sp-{client_id}"),
            upn: None,
            preferred_username: None,
            name: None,
            azp: client_id.to_string(),
            scp: None,
            ver: "2.0".into(),
            uti: random_text(22, URL_SAFE),
            cnf,
        };
        let access_token = self.key.sign(&claims);
        self.lock().access_tokens_mut().push(access_token.clone());
        json!({
            "token_type": if claims.cnf.is_some() { "pop" } else { "Bearer" },
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        })
    }

    /// The resource owner password grant.
    pub fn password_grant(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
    ) -> Result<Value, Refusal> {
        if matches!(tenant, "common" | "consumers") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                9001023,
                "The grant type is not supported over the /common or /consumers endpoints.",
            ));
        }
        let mut inner = self.lock();
        let base: GrantBase = Self::check_base(
            &inner,
            tenant,
            form.get("client_id").map(String::as_str),
            form.get("scope").map(String::as_str),
        )?;
        let user = inner.config.user.clone();
        let username = form.get("username").cloned().unwrap_or_default();
        if !username.eq_ignore_ascii_case(&user.upn) || form.get("password") != Some(&user.password)
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password.",
            ));
        }
        Ok(self.issue_for(&mut inner, &base, form))
    }

    /// Mints an access token for `resource` as if for the signed-in user: what a fake `az` or
    /// `azd` prints.
    pub fn mint_user_token(&self, resource: &str, lifetime: u64) -> String {
        let user = self.lock().config.user.clone();
        self.mint_token_for(&user, resource, lifetime)
    }

    /// As [`Self::mint_user_token`], for `user`.
    pub fn mint_token_for(&self, user: &super::MockUser, resource: &str, lifetime: u64) -> String {
        let now = now_unix();
        let claims = AccessClaims {
            aud: resource.to_string(),
            iss: format!("{}/{}/v2.0", self.base_url, user.home_tenant),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            tid: user.home_tenant.clone(),
            oid: user.oid.clone(),
            sub: user.oid.clone(),
            upn: Some(user.upn.clone()),
            preferred_username: Some(user.upn.clone()),
            name: Some(user.name.clone()),
            azp: "04b07795-8ddb-461a-bbee-02f9e1bf7b46".into(),
            scp: Some("user_impersonation".into()),
            ver: "2.0".into(),
            uti: random_text(22, URL_SAFE),
            cnf: None,
        };
        let token = self.key.sign(&claims);
        self.lock().access_tokens_mut().push(token.clone());
        token
    }

    /// Azure DevOps' answer to a job asking for its service connection's OIDC token: the
    /// federation issuer's token for subject `sc://contoso/project/<connection id>`.
    pub fn pipelines_oidc(
        &self,
        bearer: Option<&str>,
        query: &HashMap<String, String>,
    ) -> axum::response::Response {
        let expected = self.lock().pipeline_job_token.clone();
        if expected.is_none() || bearer != expected.as_deref() {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "TF400813: The user is not authorized to access this resource."}),
            );
        }
        let connection = query
            .get("serviceConnectionId")
            .cloned()
            .unwrap_or_default();
        if query.get("api-version").map(String::as_str) != Some("7.1") || connection.is_empty() {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": "serviceConnectionId and api-version=7.1 are required."}),
            );
        }
        let token =
            self.mint_federated_token(&pipeline_subject(&connection), FEDERATION_AUDIENCE, 600);
        json_response(StatusCode::OK, &json!({ "oidcToken": token }))
    }

    /// A federated token from the federation issuer: what the kubelet projects into a pod.
    pub fn mint_federated_token(
        &self,
        subject: &str,
        audience: &str,
        lifetime_secs: i64,
    ) -> String {
        let now = now_unix() as i64;
        self.federation_key.sign(&json!({
            "iss": self.federation_issuer(),
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_secs,
            "jti": guid(),
        }))
    }

    pub fn federation_issuer(&self) -> String {
        format!("{}/cluster-issuer", self.base_url)
    }

    /// `GET /metadata/identity/oauth2/token`, as IMDS answers it: numbers as strings.
    pub fn imds(
        &self,
        query: &HashMap<String, String>,
        metadata_header: bool,
    ) -> axum::response::Response {
        let bad = |text: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "invalid_request", "error_description": text }),
            )
        };
        if !metadata_header {
            return bad("Required metadata header not specified");
        }
        if query.get("api-version").is_none_or(|v| v.is_empty()) {
            return bad("Required query variable 'api-version' is missing");
        }
        let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
            return bad("Required query variable 'resource' is missing");
        };
        let identity = {
            let inner = self.lock();
            let wanted_client = query.get("client_id");
            let wanted_resource = query.get("msi_res_id");
            inner
                .managed_identities
                .iter()
                .find(|m| match (wanted_client, wanted_resource) {
                    (Some(c), _) => &m.client_id == c,
                    (None, Some(r)) => m.resource_id.as_ref() == Some(r),
                    (None, None) => m.resource_id.is_none(),
                })
                .cloned()
        };
        let Some(identity) = identity else {
            return bad("Identity not found");
        };
        let lifetime = 86_399;
        let tenant = self.lock().config.user.home_tenant.clone();
        let answer = self.app_token(&tenant, &identity.client_id, resource, lifetime, None);
        let now = now_unix();
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": answer["access_token"],
                "client_id": identity.client_id,
                "expires_in": lifetime.to_string(),
                "expires_on": (now + lifetime).to_string(),
                "ext_expires_in": lifetime.to_string(),
                "not_before": now.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }),
        )
    }
}
