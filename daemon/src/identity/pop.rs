//! Proof-of-possession tokens, as Entra issues them for Azure Arc-enabled clusters (kubelogin's
//! `--pop-enabled`): the token request carries `token_type=pop` and `req_cnf`, naming a key the
//! client holds; the access token comes back bound to it (its `cnf` claim); and what is sent to
//! the cluster is a JWS signed with that key, wrapping the access token with the cluster's ARM
//! id (`u`), a timestamp and a nonce. A stolen access token alone is worth nothing.
//!
//! Wire shapes follow kubelogin v0.2.19 (`pkg/internal/pop`): the key id is the RFC 7638
//! thumbprint of the RSA public key; `req_cnf` is base64url of `{"kid":…,"xms_ksl":"sw"}`; the
//! header is `{"typ":"pop","alg":"RS256","kid":…}`; the payload
//! `{"at":…,"ts":…,"u":…,"cnf":{"jwk":…},"nonce":…}`. The key is 3072-bit RSA (kubelogin's is
//! 2048), made once per session and kept in the secret store as PKCS#8.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::IdentityError;

/// A session's proof-of-possession key.
pub struct PopKey {
    pair: RsaKeyPair,
    kid: String,
    jwk: serde_json::Value,
    req_cnf: String,
}

impl std::fmt::Debug for PopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PopKey").field("kid", &self.kid).finish()
    }
}

impl PopKey {
    /// A new key, and its PKCS#8 form (base64) for the secret store. Slow (a prime search):
    /// call it off the async threads.
    pub fn generate() -> Result<(Self, SecretString), IdentityError> {
        use rsa::Generate;
        use rsa::pkcs8::EncodePrivateKey;
        let private = rsa::PrivateKey::generate();
        let der = private
            .to_pkcs8_der()
            .map_err(|e| IdentityError::Credential(format!("cannot encode a PoP key: {e}")))?;
        let stored = SecretString::from(B64.encode(der.as_bytes()));
        Ok((Self::from_pkcs8(der.as_bytes())?, stored))
    }

    /// The key kept in the secret store.
    pub fn from_stored(stored: &SecretString) -> Result<Self, IdentityError> {
        let der = B64
            .decode(stored.expose_secret().trim())
            .map_err(|_| IdentityError::Credential("the stored PoP key is not base64".into()))?;
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, IdentityError> {
        let pair = RsaKeyPair::from_pkcs8(der)
            .map_err(|e| IdentityError::Credential(format!("the PoP key is not usable: {e}")))?;
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let n = B64.encode(&public.n);
        let e = B64.encode(&public.e);
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = B64.encode(Sha256::digest(canonical.as_bytes()));
        let jwk = json!({"e": e, "kty": "RSA", "n": n, "alg": "RS256", "kid": kid});
        let req_cnf = B64.encode(json!({"kid": kid, "xms_ksl": "sw"}).to_string());
        Ok(PopKey {
            pair,
            kid,
            jwk,
            req_cnf,
        })
    }

    /// The token request's `req_cnf`.
    pub fn req_cnf(&self) -> &str {
        &self.req_cnf
    }

    /// The PoP token for `access_token`, for the cluster whose ARM id is `u`, made at `now`.
    pub fn sign(
        &self,
        access_token: &str,
        u: &str,
        now: SystemTime,
    ) -> Result<String, IdentityError> {
        let ts = crate::clock::unix_seconds(now);
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| IdentityError::Credential("no randomness for a PoP nonce".into()))?;
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let header = json!({"typ": "pop", "alg": "RS256", "kid": self.kid});
        let payload = json!({
            "at": access_token, "ts": ts, "u": u, "cnf": {"jwk": self.jwk}, "nonce": nonce,
        });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| IdentityError::Credential("cannot sign the PoP token".into()))?;
        Ok(format!("{input}.{}", B64.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pop_token_wraps_the_access_token_and_verifies_with_its_own_jwk() {
        let (key, stored) = PopKey::generate().unwrap();
        let again = PopKey::from_stored(&stored).unwrap();
        assert_eq!(again.kid, key.kid, "the stored key is the same key");
        let cnf: serde_json::Value =
            serde_json::from_slice(&B64.decode(key.req_cnf()).unwrap()).unwrap();
        assert_eq!(cnf, json!({"kid": key.kid, "xms_ksl": "sw"}));

        let token = key
            .sign("the-at", "/subscriptions/s/c1", SystemTime::now())
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["typ"], "pop");
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["at"], "the-at");
        assert_eq!(payload["u"], "/subscriptions/s/c1");
        let jwk = &payload["cnf"]["jwk"];
        assert_eq!(jwk["kid"], key.kid.as_str());
        let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &B64.decode(parts[2]).unwrap(),
            )
            .expect("the signature verifies with the key in cnf");
        assert!(!format!("{key:?}").contains(jwk["n"].as_str().unwrap()));
    }
}
