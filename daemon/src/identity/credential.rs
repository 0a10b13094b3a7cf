//! What a caller may supply for the non-interactive login modes: an application's secret or
//! certificate, a federated token file, a user's password. `Debug` shows which are present,
//! never their values.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// A client certificate on disk: PEM (certificate and RSA key) or PFX/PKCS#12.
#[derive(Clone)]
pub struct CertificateSource {
    pub path: PathBuf,
    pub password: Option<SecretString>,
}

impl fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateSource")
            .field("path", &self.path)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .finish()
    }
}

impl PartialEq for CertificateSource {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && same_secret(&self.password, &other.password)
    }
}

/// Credentials from a caller's flags and environment.
#[derive(Clone, Default)]
pub struct Supplied {
    pub client_secret: Option<SecretString>,
    pub certificate: Option<CertificateSource>,
    pub federated_token_file: Option<PathBuf>,
    pub password: Option<SecretString>,
    /// A CI job's OIDC endpoint and token (Azure Pipelines, GitHub Actions).
    pub ci: Option<super::ci_tokens::CiCredential>,
}

impl Supplied {
    pub fn is_empty(&self) -> bool {
        self.client_secret.is_none()
            && self.certificate.is_none()
            && self.federated_token_file.is_none()
            && self.password.is_none()
            && self.ci.is_none()
    }
}

impl fmt::Debug for Supplied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supplied")
            .field("client_secret", &self.client_secret.is_some())
            .field("certificate", &self.certificate)
            .field("federated_token_file", &self.federated_token_file)
            .field("password", &self.password.is_some())
            .field("ci", &self.ci)
            .finish()
    }
}

/// Whether two optional secrets hold the same value.
pub fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_presence_not_values() {
        let supplied = Supplied {
            client_secret: Some("s3cret-value".into()),
            certificate: Some(CertificateSource {
                path: "/x/cert.pfx".into(),
                password: Some("pfx-password".into()),
            }),
            federated_token_file: None,
            password: Some("user-password".into()),
            ci: None,
        };
        let printed = format!("{supplied:?}");
        for secret in ["s3cret-value", "pfx-password", "user-password"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("/x/cert.pfx"));
    }
}
