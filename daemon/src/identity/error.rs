//! What the identity provider's error answers mean for the broker.
//!
//! Entra error bodies carry a generic OAuth `error`, an `AADSTSnnnn: ...` description, numeric
//! `error_codes` and sometimes a `suberror`. The broker needs only one decision from them: retry
//! later, ask the user to sign in again, or report a configuration mistake.

use std::fmt;

use broker_proto::text::printable;
use serde::{Deserialize, Serialize};

/// Entra's error body (`/oauth2/v2.0/token`, `/devicecode`). Unknown fields are ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct EntraErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suberror: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl oauth2::ErrorResponse for EntraErrorBody {}

/// What the broker should do about an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A passing fault at the IdP: try again later, keep serving a still-valid token.
    Transient,
    /// The grant is no good (expired, revoked, MFA or consent needed): the user must sign in.
    LoginRequired,
    /// The request itself is wrong (client, tenant, scope): no retry or login will fix it.
    Config,
}

/// AADSTS codes that mean "sign in again", whatever the `error` string says.
const LOGIN_REQUIRED_CODES: &[i64] = &[
    50058,  // no SSO session
    50076,  // MFA required
    50078,  // presented MFA expired
    50079,  // must register for MFA
    50173,  // grant revoked (password change, admin revoke)
    53003,  // blocked by Conditional Access: the user must act
    65001,  // consent required
    70008,  // code or refresh token expired
    70043,  // refresh token invalid under sign-in frequency
    700082, // refresh token inactive for 90 days
    700084, // SPA refresh token lifetime ended
];

/// AADSTS codes that mean the configuration is wrong.
const CONFIG_CODES: &[i64] = &[
    7000215, // invalid client secret
    7000222, // client secret expired
    700016,  // application not found in the tenant
    90002,   // tenant not found
    70011,   // invalid scope
    500011,  // resource principal not found
    9001023, // grant not supported for this tenant type
];

impl EntraErrorBody {
    pub fn classify(&self) -> ErrorClass {
        if self
            .error_codes
            .iter()
            .any(|c| LOGIN_REQUIRED_CODES.contains(c))
        {
            return ErrorClass::LoginRequired;
        }
        if self.error_codes.iter().any(|c| CONFIG_CODES.contains(c)) {
            return ErrorClass::Config;
        }
        match self.error.as_str() {
            "invalid_grant"
            | "interaction_required"
            | "consent_required"
            | "login_required"
            | "expired_token"
            | "authorization_declined"
            | "bad_verification_code" => ErrorClass::LoginRequired,
            "temporarily_unavailable" | "server_error" | "slow_down" => ErrorClass::Transient,
            // invalid_client, invalid_tenant, unauthorized_client, invalid_scope,
            // invalid_resource, invalid_request, unsupported_grant_type and anything unknown:
            // retrying the same request cannot help.
            _ => ErrorClass::Config,
        }
    }

    /// The first line of `error_description`, e.g. `AADSTS700082: The refresh token has
    /// expired due to inactivity. ...`, without the trace and correlation ids that follow it.
    pub fn summary(&self) -> String {
        let description = self.error_description.as_deref().unwrap_or("").trim();
        // The IdP's words reach logs, status and terminals: no control character of theirs.
        let first = description
            .split(['\r', '\n'])
            .next()
            .unwrap_or("")
            .split(" Trace ID:")
            .next()
            .unwrap_or("")
            .trim();
        if first.is_empty() {
            printable(&self.error).into_owned()
        } else {
            printable(first).into_owned()
        }
    }
}

impl fmt::Display for EntraErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self.summary();
        let error = printable(&self.error);
        if summary == error {
            write!(f, "{error}")
        } else {
            write!(f, "{error}: {summary}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> EntraErrorBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_a_recorded_entra_error() {
        let e = body(
            r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2024-01-01 and was inactive for 90.00:00:00. Trace ID: 1 Correlation ID: 2 Timestamp: 2025-02-19 03:40:30Z","error_codes":[700082],"timestamp":"2025-02-19 03:40:30Z","trace_id":"1","correlation_id":"2","suberror":"bad_token","error_uri":"https://login.microsoftonline.com/error?code=700082"}"#,
        );
        assert_eq!(e.classify(), ErrorClass::LoginRequired);
        assert_eq!(e.suberror.as_deref(), Some("bad_token"));
        assert_eq!(
            e.summary(),
            "AADSTS700082: The refresh token has expired due to inactivity. The token was issued \
             on 2024-01-01 and was inactive for 90.00:00:00."
        );
    }

    #[test]
    fn older_crlf_descriptions_keep_their_first_line() {
        let e = body(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x\r\nCorrelation ID: y","error_codes":[7000215]}"#,
        );
        assert_eq!(
            e.summary(),
            "AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(e.classify(), ErrorClass::Config);
    }

    #[test]
    fn classification_follows_codes_then_error() {
        let cases = [
            (
                r#"{"error":"invalid_grant","error_codes":[50173]}"#,
                ErrorClass::LoginRequired,
            ),
            (
                r#"{"error":"interaction_required","error_codes":[50079]}"#,
                ErrorClass::LoginRequired,
            ),
            (
                r#"{"error":"invalid_grant","error_codes":[50076],"suberror":"basic_action"}"#,
                ErrorClass::LoginRequired,
            ),
            (
                r#"{"error":"invalid_grant","error_codes":[65001],"suberror":"consent_required"}"#,
                ErrorClass::LoginRequired,
            ),
            (
                r#"{"error":"invalid_grant","error_codes":[70008]}"#,
                ErrorClass::LoginRequired,
            ),
            (r#"{"error":"invalid_grant"}"#, ErrorClass::LoginRequired),
            (
                r#"{"error":"invalid_client","error_codes":[7000215]}"#,
                ErrorClass::Config,
            ),
            (
                r#"{"error":"invalid_tenant","error_codes":[90002]}"#,
                ErrorClass::Config,
            ),
            (
                r#"{"error":"invalid_request","error_codes":[90002]}"#,
                ErrorClass::Config,
            ),
            (
                r#"{"error":"unauthorized_client","error_codes":[700016]}"#,
                ErrorClass::Config,
            ),
            (
                r#"{"error":"temporarily_unavailable"}"#,
                ErrorClass::Transient,
            ),
            (r#"{"error":"server_error"}"#, ErrorClass::Transient),
        ];
        for (json, class) in cases {
            assert_eq!(body(json).classify(), class, "{json}");
        }
    }

    #[test]
    fn the_idps_words_lose_their_control_characters() {
        let e = body(
            r#"{"error":"invalid_grant\u001b[2J","error_description":"AADSTS50173: revoked\u001b]0;pwned\u0007 now\u202e"}"#,
        );
        let shown = e.to_string();
        assert_eq!(shown, "invalid_grant[2J: AADSTS50173: revoked]0;pwned now");
    }

    #[test]
    fn display_is_one_line() {
        let e = body(
            r#"{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked.\r\nTrace ID: z"}"#,
        );
        assert_eq!(
            e.to_string(),
            "invalid_grant: AADSTS50173: The provided grant has expired due to it being revoked."
        );
    }
}
