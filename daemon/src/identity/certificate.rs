//! Client certificates for service principals, and the client assertion Entra wants signed
//! with them: a JWT with `alg` PS256, `x5t#S256` (the certificate's SHA-256 thumbprint), `aud` the
//! token endpoint, `iss` = `sub` = the client id, a `jti`, and a ten-minute lifetime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use serde_json::json;

use super::IdentityError;
use super::credential::CertificateSource;

/// How long a client assertion is valid (Entra asks for 5 to 10 minutes).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A loaded client certificate: its thumbprint and its RSA key.
pub struct ClientCertificate {
    thumbprint_s256: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.thumbprint_s256)
            .finish_non_exhaustive()
    }
}

fn config_error(source: &CertificateSource, why: &str) -> IdentityError {
    IdentityError::Credential(format!(
        "client certificate {}: {why}",
        source.path.display()
    ))
}

impl ClientCertificate {
    /// Reads a PEM file (a certificate and an unencrypted RSA key, PKCS#1 or PKCS#8) or a
    /// PFX/PKCS#12 file (with its password). Errors never quote the file's contents.
    pub fn load(source: &CertificateSource) -> Result<Self, IdentityError> {
        let bytes = std::fs::read(&source.path)
            .map_err(|e| config_error(source, &format!("cannot read it: {e}")))?;
        let (cert, key) = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            Self::from_pem(source, &bytes)?
        } else {
            Self::from_pfx(source, &bytes)?
        };
        let thumbprint_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, &cert).as_ref());
        Ok(ClientCertificate {
            thumbprint_s256,
            key,
        })
    }

    fn from_pem(
        source: &CertificateSource,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, RsaKeyPair), IdentityError> {
        let cert = CertificateDer::pem_slice_iter(bytes)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| config_error(source, "no CERTIFICATE block in the PEM file"))?;
        let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|_| {
            config_error(
                source,
                "no unencrypted RSA PRIVATE KEY or PRIVATE KEY block in the PEM file",
            )
        })?;
        let key = match &key {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(config_error(source, "the private key is not an RSA key")),
        }
        .map_err(|e| config_error(source, &format!("the RSA key is not usable: {e}")))?;
        Ok((cert.to_vec(), key))
    }

    fn from_pfx(
        source: &CertificateSource,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, RsaKeyPair), IdentityError> {
        let password = source
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string())
            .unwrap_or_default();
        let store = p12_keystore::KeyStore::from_pkcs12(
            bytes,
            &password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|_| {
            config_error(
                source,
                "not a PEM file, and not a PFX/PKCS#12 file this password opens",
            )
        })?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| config_error(source, "the PFX file holds no private key"))?;
        let cert = chain
            .certs()
            .first()
            .ok_or_else(|| config_error(source, "the PFX file holds no certificate"))?;
        let key = RsaKeyPair::from_pkcs8(chain.key().as_der())
            .map_err(|e| config_error(source, &format!("the key is not a usable RSA key: {e}")))?;
        Ok((cert.as_der().to_vec(), key))
    }

    /// The signed client assertion for `client_id` at `token_endpoint`, issued at `now`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<String, IdentityError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint_s256 });
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
            .map_err(|_| IdentityError::Credential("no randomness for the assertion".into()))?;
        let claims = json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": issued,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| IdentityError::Credential("signing the client assertion failed".into()))?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }

    pub fn thumbprint(&self) -> &str {
        &self.thumbprint_s256
    }
}
