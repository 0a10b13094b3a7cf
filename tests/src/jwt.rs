//! RS256 signing for the mock Entra ID, and verification for the fake API server and the tests:
//! tokens "the mock signed" are exactly those that verify against its key.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::traits::PublicKeyParts;
use rsa::{Generate, PrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The claims of an access token the mock issues (Entra v2 shape).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    /// User tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub azp: String,
    /// Delegated scopes (user tokens); app tokens have roles instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    pub ver: String,
    /// Unique per token, so that every issued token differs.
    pub uti: String,
    /// Proof-of-possession tokens: the key they are bound to (`{"kid": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
}

pub struct SigningKey {
    kid: String,
    /// ring signs: its assembly is fast even in a debug build, where RustCrypto's RSA takes
    /// milliseconds per token.
    signer: ring::signature::RsaKeyPair,
    decoding: DecodingKey,
    n: String,
    e: String,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key.
    pub fn generate() -> Self {
        use rsa::pkcs8::EncodePrivateKey;
        let private = PrivateKey::generate();
        let der = private
            .to_pkcs8_der()
            .expect("a generated RSA key encodes as PKCS#8");
        let signer = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes())
            .expect("ring takes the generated key");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let n = b64(&private.n_bytes());
        let e = b64(&private.e_bytes());
        let decoding = DecodingKey::from_rsa_components(&n, &e).expect("valid RSA components");
        let kid = b64(&sha2_digest(n.as_bytes())[..12]);
        SigningKey {
            kid,
            signer,
            decoding,
            n,
            e,
        }
    }

    /// A compact JWS (RS256) over `claims`, as RFC 7515 lays it out.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": self.kid });
        let claims = serde_json::to_vec(claims).expect("claims serialise");
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&claims));
        let mut signature = vec![0; self.signer.public().modulus_len()];
        self.signer
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("RSA signing");
        format!("{signing_input}.{}", b64(&signature))
    }

    /// Checks signature, expiry and audience; returns the claims.
    pub fn verify(&self, token: &str, audience: &str) -> Result<AccessClaims, String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.leeway = 0;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    /// Checks an RS256 token's signature only, and returns its claims: for assertions whose
    /// claims the caller checks itself.
    pub fn verify_signature(&self, token: &str) -> Result<serde_json::Value, String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    /// The JSON Web Key Set that `/discovery/v2.0/keys` serves.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": self.kid,
                "n": self.n,
                "e": self.e,
            }]
        })
    }
}

/// The keys an issuer publishes (its JWKS), for checking its tokens from another process.
pub struct PublishedKeys {
    keys: Vec<(String, DecodingKey)>,
}

impl PublishedKeys {
    /// Reads a JSON Web Key Set of RSA keys.
    pub fn from_jwks(jwks: &Value) -> Result<Self, String> {
        let keys = jwks["keys"]
            .as_array()
            .ok_or("the key set has no keys")?
            .iter()
            .filter_map(|key| {
                let kid = key["kid"].as_str()?.to_string();
                let decoding =
                    DecodingKey::from_rsa_components(key["n"].as_str()?, key["e"].as_str()?)
                        .ok()?;
                Some((kid, decoding))
            })
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Err("the key set has no usable RSA key".into());
        }
        Ok(PublishedKeys { keys })
    }

    /// As [`SigningKey::verify`], with whichever published key the token names.
    pub fn verify(&self, token: &str, audience: &str) -> Result<AccessClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let (_, decoding) = self
            .keys
            .iter()
            .find(|(kid, _)| header.kid.as_deref() == Some(kid.as_str()))
            .ok_or("the token names no published key")?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience]);
        validation.leeway = 0;
        jsonwebtoken::decode::<AccessClaims>(token, decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, exp: u64) -> AccessClaims {
        AccessClaims {
            aud: aud.into(),
            iss: "http://127.0.0.1/t/v2.0".into(),
            iat: 0,
            nbf: 0,
            exp,
            tid: "t".into(),
            oid: "o".into(),
            sub: "s".into(),
            upn: Some("u".into()),
            preferred_username: Some("u".into()),
            name: Some("n".into()),
            azp: "c".into(),
            scp: Some("user.read".into()),
            ver: "2.0".into(),
            uti: "x".into(),
            cnf: None,
        }
    }

    #[test]
    fn verifies_only_its_own_unexpired_tokens_for_the_audience() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let far = 4_000_000_000;
        let token = key.sign(&claims("server", far));
        assert_eq!(key.verify(&token, "server").unwrap().aud, "server");
        assert!(key.verify(&token, "elsewhere").is_err());
        assert!(other.verify(&token, "server").is_err());
        assert!(
            key.verify(&key.sign(&claims("server", 1)), "server")
                .is_err()
        );
    }
}
