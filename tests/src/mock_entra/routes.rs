//! The mock's HTTP surface: Entra's v2.0 endpoints, the device login page a person would use,
//! and `/_mock/*` controls for scripts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::Fault;
use super::errors::{entra_error, html, json_response};
use super::state::{DeviceStatus, State, delay};

type Shared = Extract<Arc<State>>;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(devicecode))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/devicelogin",
            get(devicelogin_page).post(devicelogin_submit),
        )
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/_pipelines/oidctoken", post(pipelines_oidc))
        .route("/_github/idtoken", get(github_id_token))
        // A generic OpenID Connect issuer shaped as Keycloak's realms: the issuer has a path.
        .route(
            "/realms/{tenant}/.well-known/openid-configuration",
            get(realm_configuration),
        )
        .route(
            "/realms/{tenant}/protocol/openid-connect/auth",
            get(authorize),
        )
        .route(
            "/realms/{tenant}/protocol/openid-connect/auth/device",
            post(devicecode),
        )
        .route(
            "/realms/{tenant}/protocol/openid-connect/token",
            post(token),
        )
        .route("/realms/{tenant}/protocol/openid-connect/certs", get(keys))
        // Dex's shape: one issuer, `{base}/dex`, flat endpoint names, no revocation endpoint.
        .route(
            "/dex/.well-known/openid-configuration",
            get(dex_configuration),
        )
        .route("/dex/auth", get(dex_auth))
        .route("/dex/token", post(dex_token))
        .route("/dex/device/code", post(dex_device_code))
        .route("/dex/keys", get(keys))
        .route(
            "/realms/{tenant}/protocol/openid-connect/revoke",
            post(revoke_token),
        )
        .route("/_mock/approve", post(approve_all))
        .route("/_mock/revoke", post(revoke))
        .route("/_mock/stats", get(stats))
        .with_state(state)
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn openid_configuration(Extract(state): Shared, Path(tenant): Path<String>) -> Response {
    let base = &state.base_url;
    let issuer_tenant = if matches!(tenant.as_str(), "common" | "organizations" | "consumers") {
        "{tenantid}".to_string()
    } else {
        tenant.clone()
    };
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/{issuer_tenant}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
        }),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=86400, private"),
    );
    response
}

async fn keys(Extract(state): Shared) -> Response {
    json_response(StatusCode::OK, &state.key.jwks())
}

/// Applies the next injected fault, if any. `Some` is the answer to send instead.
async fn fault(state: &State) -> Option<Response> {
    match state.take_fault()? {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(html(status, "Service unavailable", "<p>injected fault</p>"))
        }
        Fault::TooManyRequests { retry_after } => {
            let mut response = entra_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                50196,
                "The server terminated an operation because it encountered a client request loop.",
                None,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after.to_string()).expect("digits"),
            );
            Some(response)
        }
        Fault::Delay(duration) => {
            delay(duration).await;
            None
        }
        Fault::Malformed => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                "{\"access_token\": \"unterminated",
            )
                .into_response(),
        ),
        Fault::Oversized => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                format!("{{\"padding\":\"{}\"}}", "x".repeat(4 * 1024 * 1024)),
            )
                .into_response(),
        ),
    }
}

/// A Keycloak realm's discovery document. Only realms the test created exist.
async fn realm_configuration(Extract(state): Shared, Path(tenant): Path<String>) -> Response {
    state.bump("discovery");
    if !state.is_realm(&tenant) {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "Realm does not exist"}),
        );
    }
    let issuer = state.realm_issuer(&tenant);
    let endpoint = |name: &str| format!("{issuer}/protocol/openid-connect/{name}");
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": endpoint("auth"),
            "token_endpoint": endpoint("token"),
            "device_authorization_endpoint": endpoint("auth/device"),
            "revocation_endpoint": endpoint("revoke"),
            "jwks_uri": endpoint("certs"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
    )
}

/// Dex's discovery document (when the test made its realm, `super::DEX`).
async fn dex_configuration(Extract(state): Shared) -> Response {
    state.bump("discovery");
    if !state.is_realm(super::DEX) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let issuer = state.realm_issuer(super::DEX);
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/keys"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
            "device_authorization_endpoint": format!("{issuer}/device/code"),
            "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "scopes_supported": ["openid", "email", "groups", "profile", "offline_access"],
        }),
    )
}

async fn dex_auth(state: Shared, query: Query<HashMap<String, String>>) -> Response {
    authorize(state, Path(super::DEX.to_string()), query).await
}

async fn dex_token(state: Shared, body: Bytes) -> Response {
    token(state, Path(super::DEX.to_string()), body).await
}

async fn dex_device_code(state: Shared, body: Bytes) -> Response {
    devicecode(state, Path(super::DEX.to_string()), body).await
}

/// RFC 7009 token revocation, as Keycloak does it: the refresh token and every token of its
/// sign-in stop working; 200 whatever the token was.
async fn revoke_token(
    Extract(state): Shared,
    Path(_tenant): Path<String>,
    body: Bytes,
) -> Response {
    state.bump("revoke");
    let form = form(&body);
    state.revoke_family(form.get("token").map(String::as_str).unwrap_or(""));
    StatusCode::OK.into_response()
}

async fn devicecode(Extract(state): Shared, Path(tenant): Path<String>, body: Bytes) -> Response {
    state.bump("devicecode");
    if let Some(response) = fault(&state).await {
        return response;
    }
    match state.start_device_code(&tenant, &form(&body)) {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(refusal) => *refusal,
    }
}

async fn authorize(
    Extract(state): Shared,
    Path(tenant): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.bump("authorize");
    match state.authorize(&tenant, &query) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(refusal) => *refusal,
    }
}

async fn token(Extract(state): Shared, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form = form(&body);
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let grant = match grant_type.as_str() {
        // MSAL and azidentity send the short form; RFC 8628 clients send the URN.
        "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => "device_code",
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "client_credentials" => "client_credentials",
        "password" => "password",
        _ => "unsupported",
    };
    state.bump(grant);
    // Grants that brokerd caps (refreshes and the prompt-free logins); the interactive logins'
    // device-code polls and code redemptions are not.
    let capped = !matches!(grant, "device_code" | "authorization_code");
    let _in_flight = capped.then(|| state.enter());
    let (outage, delay) = {
        let inner = state.lock();
        (inner.outage, inner.delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = outage {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return html(status, "Service unavailable", "<p>outage</p>");
    }
    if let Some(response) = fault(&state).await {
        return response;
    }
    if form.get("token_type").map(String::as_str) == Some("pop")
        && super::state::pop_cnf(&form).is_none()
    {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            5002201,
            "The req_cnf parameter is missing or malformed for a PoP token request.",
            None,
        );
    }
    if grant != "client_credentials"
        && let Some(refusal) = state.realm_client_refusal(&tenant, &form)
    {
        return *refusal;
    }
    let result = match grant {
        "device_code" => state.redeem_device_code(&tenant, &form),
        "authorization_code" => state.redeem_code(&tenant, &form),
        "refresh_token" => state.redeem_refresh_token(&tenant, &form),
        "client_credentials" => state.client_credentials(&tenant, &form),
        "password" => state.password_grant(&tenant, &form),
        _ => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant_type}'."),
                None,
            );
        }
    };
    let mut response = match result {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(refusal) => *refusal,
    };
    // The Date of the IdP's own clock.
    let offset = state.lock().config.clock_offset;
    let date = std::time::SystemTime::now()
        .checked_add(std::time::Duration::from_secs(offset.unsigned_abs()))
        .filter(|_| offset >= 0)
        .or_else(|| {
            std::time::SystemTime::now()
                .checked_sub(std::time::Duration::from_secs(offset.unsigned_abs()))
        });
    if let Some(date) = date
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(date))
    {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

async fn imds(
    Extract(state): Shared,
    headers: axum::http::HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.bump("imds");
    if let Some(response) = fault(&state).await {
        return response;
    }
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true");
    state.imds(&query, metadata)
}

/// Azure DevOps' OIDC token endpoint for a pipeline job (`SYSTEM_OIDCREQUESTURI`).
async fn pipelines_oidc(
    Extract(state): Shared,
    headers: axum::http::HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.bump("pipelines_oidc");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    state.pipelines_oidc(bearer, &query)
}

/// GitHub Actions' ID token endpoint for a job (`ACTIONS_ID_TOKEN_REQUEST_URL`).
async fn github_id_token(
    Extract(state): Shared,
    headers: axum::http::HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.bump("github_id_token");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.to_string());
    let expected = state.lock().github_request_token.clone();
    if expected.is_none() || bearer != expected {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Bad credentials"}),
        );
    }
    let audience = query.get("audience").cloned().unwrap_or_default();
    let token = state.mint_federated_token(super::GITHUB_SUBJECT, &audience, 300);
    json_response(StatusCode::OK, &json!({ "value": token }))
}

async fn devicelogin_page() -> Response {
    html(
        StatusCode::OK,
        "Enter code",
        "<form method=\"post\"><p>Enter the code displayed on your device.</p>\
         <input name=\"user_code\" autofocus>\
         <button name=\"action\" value=\"approve\">Sign in</button>\
         <button name=\"action\" value=\"decline\">Decline</button></form>",
    )
}

async fn devicelogin_submit(Extract(state): Shared, body: Bytes) -> Response {
    let form = form(&body);
    let code = form.get("user_code").cloned().unwrap_or_default();
    let status = if form.get("action").map(String::as_str) == Some("decline") {
        DeviceStatus::Declined
    } else {
        DeviceStatus::Approved
    };
    if state.decide_device_code(&code, status) {
        html(
            StatusCode::OK,
            "Done",
            "<p>You have signed in to the mock Entra ID. You may now close this window.</p>",
        )
    } else {
        html(
            StatusCode::BAD_REQUEST,
            "Unknown code",
            "<p>That code is not known or has already been used.</p>",
        )
    }
}

/// Approves every pending device code: handy in scripted demos.
async fn approve_all(Extract(state): Shared) -> Response {
    let codes = state.pending_user_codes();
    for code in &codes {
        state.decide_device_code(code, DeviceStatus::Approved);
    }
    json_response(StatusCode::OK, &json!({ "approved": codes }))
}

async fn revoke(Extract(state): Shared) -> Response {
    state.revoke_refresh_tokens();
    json_response(StatusCode::OK, &json!({ "revoked": true }))
}

async fn stats(Extract(state): Shared) -> Response {
    json_response(StatusCode::OK, &json!({ "requests": state.counts() }))
}
