//! Tokens as the broker holds them: secrets wrapped so that they never print, with the wall-clock
//! time they stop working.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A bearer access token. `Debug` shows only its expiry.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    pub expires_at: SystemTime,
}

/// The longest an access token is believed to live. Entra's live 60 to 90 minutes (up to 28
/// hours under continuous access evaluation); a longer claim, from a broken or hostile answer,
/// is cut down to this, so that it can neither overflow time arithmetic (a panic in the
/// scheduler) nor park a token, or a refresh, years away.
pub const MAX_LIFETIME: Duration = Duration::from_secs(48 * 3600);

impl AccessToken {
    pub fn new(secret: SecretString, expires_at: SystemTime) -> Self {
        AccessToken { secret, expires_at }
    }

    /// A token the IdP says lives `lifetime` from `now` (at most [`MAX_LIFETIME`]).
    pub fn expiring_in(secret: SecretString, now: SystemTime, lifetime: Duration) -> Self {
        Self::new(secret, now + lifetime.min(MAX_LIFETIME))
    }

    /// A token that a tool says expires at `at` (at most [`MAX_LIFETIME`] from `now`).
    pub fn expiring_at(secret: SecretString, now: SystemTime, at: SystemTime) -> Self {
        Self::new(secret, at.min(now + MAX_LIFETIME))
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Time left before expiry at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A refresh token: the long-lived secret that lives in the OS keyring and in brokerd's memory
/// only. Zeroized on drop; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn new(secret: SecretString) -> Self {
        RefreshToken(secret)
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// What a successful grant yields.
#[derive(Debug)]
pub struct TokenSet {
    pub access: AccessToken,
    /// Absent when the IdP did not rotate it; the old one then stays in use.
    pub refresh: Option<RefreshToken>,
    /// The IdP's hint for when to refresh (Entra's `refresh_in`), if it gave one.
    pub refresh_in: Option<Duration>,
    /// The signed-in account, from the ID token.
    pub account: Option<String>,
}

/// An ID token as received. Only its claims for display are read; `Debug` hides it.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct IdToken(String);

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken(..)")
    }
}

/// The `exp` claim of a token that is a JWT (Unix seconds, the issuer's clock); `None` for
/// an opaque token. Read for timing only: the token came straight from the token endpoint
/// over TLS, and nothing is trusted on its say-so but when to stop using it.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Expiry {
        exp: Option<serde_json::Number>,
    }
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Expiry = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.exp?;
    exp.as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

#[derive(Deserialize)]
struct AccountClaims {
    preferred_username: Option<String>,
    upn: Option<String>,
    email: Option<String>,
    unique_name: Option<String>,
}

impl IdToken {
    /// The token itself: an OpenID Connect session serves it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(fuzzing)]
    pub fn from_text(text: &str) -> Self {
        IdToken(text.to_string())
    }

    /// The account name the ID token was issued to, for display. The token arrived straight
    /// from the token endpoint over TLS, so its signature is not checked: nothing is decided
    /// on this value.
    pub fn account(&self) -> Option<String> {
        let payload = self.0.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: AccountClaims = serde_json::from_slice(&bytes).ok()?;
        [
            claims.preferred_username,
            claims.upn,
            claims.email,
            claims.unique_name,
        ]
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty() && !name.chars().any(broker_proto::text::is_unsafe_char))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> IdToken {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        IdToken(format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims)))
    }

    #[test]
    fn account_prefers_preferred_username() {
        let t = jwt(r#"{"preferred_username":"alice@contoso.example","upn":"x@y"}"#);
        assert_eq!(t.account().as_deref(), Some("alice@contoso.example"));
        let t = jwt(r#"{"upn":"bob@contoso.example"}"#);
        assert_eq!(t.account().as_deref(), Some("bob@contoso.example"));
        assert_eq!(jwt(r#"{"sub":"x"}"#).account(), None);
        assert_eq!(IdToken("not a jwt".into()).account(), None);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let at = AccessToken::new("at-secret".into(), SystemTime::UNIX_EPOCH);
        let rt = RefreshToken::new("rt-secret".into());
        let printed = format!("{at:?} {rt:?} {:?}", IdToken("id-secret".into()));
        assert!(!printed.contains("secret"), "{printed}");
    }
}
