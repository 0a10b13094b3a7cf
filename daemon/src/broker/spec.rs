//! What names a session: the parameters of kubelogin's `get-token`, validated and resolved.
//!
//! Every kubeconfig user whose parameters resolve to the same authority, tenant, client, scopes
//! and login mode shares one session, and so one login: all AKS clusters of a tenant use the same
//! server id.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::identity::Target;
use crate::identity::cloud::{Authority, AuthorityError};

/// The "Azure Kubernetes Service AAD Client" app, kubelogin's public client for user logins;
/// used when a spec names no client.
pub const AKS_CLIENT_ID: &str = "80faf920-1908-4b52-b5ef-a8e7bedfc67a";

/// Scopes every user session asks for besides the resource: a refresh token, an ID token and
/// the account's name.
const USER_SCOPES: [&str; 3] = ["offline_access", "openid", "profile"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginMode {
    DeviceCode,
    Interactive,
}

impl LoginMode {
    /// kubelogin's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            LoginMode::DeviceCode => "devicecode",
            LoginMode::Interactive => "interactive",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "devicecode" => Some(LoginMode::DeviceCode),
            "interactive" => Some(LoginMode::Interactive),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("{flag} is required")]
    Missing { flag: &'static str },
    #[error("{flag} {value:?} is not valid: {why}")]
    Invalid {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
}

/// A session's parameters as given, plus the authority they resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// As given (`--environment`); kept to show and to rebuild the login command.
    pub environment: String,
    /// As given (`--authority-host`); wins over `environment` when set.
    pub authority_host: String,
    pub authority: Authority,
    pub tenant_id: String,
    pub client_id: String,
    pub server_id: String,
    pub login_mode: LoginMode,
}

/// A short, stable name for a session, derived from what identifies it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SessionSpec {
    pub fn new(
        environment: &str,
        authority_host: &str,
        tenant_id: &str,
        client_id: &str,
        server_id: &str,
        login_mode: LoginMode,
    ) -> Result<Self, SpecError> {
        let authority = Authority::resolve(environment, authority_host)?;
        let tenant_id = tenant_id.trim();
        if tenant_id.is_empty() {
            return Err(SpecError::Missing {
                flag: "--tenant-id",
            });
        }
        if !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(SpecError::Invalid {
                flag: "--tenant-id",
                value: tenant_id.into(),
                why: "a tenant is a GUID or a domain name",
            });
        }
        let client_id = match client_id.trim() {
            "" => AKS_CLIENT_ID,
            id => id,
        };
        check_token_value("--client-id", client_id)?;
        let server_id = server_id.trim();
        if server_id.is_empty() {
            return Err(SpecError::Missing {
                flag: "--server-id",
            });
        }
        check_token_value("--server-id", server_id)?;
        Ok(SessionSpec {
            environment: environment.trim().to_string(),
            authority_host: authority_host.trim().to_string(),
            authority,
            // Tenants are GUIDs or domain names: both case-insensitive.
            tenant_id: tenant_id.to_ascii_lowercase(),
            client_id: normalise_guid(client_id),
            server_id: normalise_guid(server_id),
            login_mode,
        })
    }

    /// `<server id>/.default` and the user scopes, in the order Entra expects them.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes = vec![format!("{}/.default", self.server_id)];
        scopes.extend(USER_SCOPES.iter().map(|s| s.to_string()));
        scopes
    }

    pub fn target(&self) -> Target {
        Target {
            authority: self.authority.clone(),
            tenant: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            scopes: self.scopes(),
        }
    }

    /// Twelve hex digits of SHA-256 over the identifying parameters.
    pub fn id(&self) -> SessionId {
        let mut hasher = Sha256::new();
        for part in [
            self.authority.as_str(),
            &self.tenant_id,
            &self.client_id,
            &self.scopes().join(" "),
            self.login_mode.name(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let digest = hasher.finalize();
        SessionId(digest[..6].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A short description for logs and messages: no secrets, just what names the session.
    pub fn describe(&self) -> String {
        format!(
            "{} in tenant {} ({})",
            self.server_id,
            self.tenant_id,
            self.login_mode.name()
        )
    }
}

/// Values that travel in scopes and form bodies: no spaces, no control characters.
fn check_token_value(flag: &'static str, value: &str) -> Result<(), SpecError> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::Invalid {
            flag,
            value: value.into(),
            why: "it must not contain spaces or control characters",
        });
    }
    Ok(())
}

/// GUIDs compare case-insensitively; lower-case them so that one session serves every
/// spelling. Other values (`api://...` server ids, other IdPs' client ids) are kept as given.
fn normalise_guid(value: &str) -> String {
    let is_guid = value.len() == 36
        && value.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if is_guid {
        value.to_ascii_lowercase()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
    const TENANT: &str = "00000000-0000-0000-0000-000000000001";

    fn spec(env: &str, host: &str, tenant: &str, client: &str, mode: LoginMode) -> SessionSpec {
        SessionSpec::new(env, host, tenant, client, SERVER, mode).unwrap()
    }

    #[test]
    fn one_session_for_every_spelling_of_the_same_identity() {
        let a = spec("AzurePublicCloud", "", TENANT, "", LoginMode::DeviceCode);
        let b = spec(
            "azurecloud",
            "",
            &TENANT.to_uppercase(),
            &AKS_CLIENT_ID.to_uppercase(),
            LoginMode::DeviceCode,
        );
        let c = spec(
            "AzureChinaCloud",
            "https://login.microsoftonline.com/",
            TENANT,
            AKS_CLIENT_ID,
            LoginMode::DeviceCode,
        );
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id(), c.id());
        assert_eq!(a.id().as_str().len(), 12);
    }

    #[test]
    fn mode_cloud_and_tenant_separate_sessions() {
        let a = spec("", "", TENANT, "", LoginMode::DeviceCode);
        assert_ne!(
            a.id(),
            spec("", "", TENANT, "", LoginMode::Interactive).id()
        );
        assert_ne!(
            a.id(),
            spec("AzureChinaCloud", "", TENANT, "", LoginMode::DeviceCode).id()
        );
        assert_ne!(
            a.id(),
            spec("", "", "contoso.example", "", LoginMode::DeviceCode).id()
        );
    }

    #[test]
    fn scopes_are_the_resource_then_the_user_scopes() {
        let a = spec("", "", TENANT, "", LoginMode::DeviceCode);
        assert_eq!(
            a.scopes(),
            vec![
                format!("{SERVER}/.default"),
                "offline_access".into(),
                "openid".into(),
                "profile".into()
            ]
        );
    }

    #[test]
    fn bad_input_names_the_flag() {
        let err = SessionSpec::new("", "", "", "", SERVER, LoginMode::DeviceCode).unwrap_err();
        assert_eq!(err.to_string(), "--tenant-id is required");
        let err = SessionSpec::new("", "", TENANT, "", "", LoginMode::DeviceCode).unwrap_err();
        assert_eq!(err.to_string(), "--server-id is required");
        let err = SessionSpec::new("", "", "a/b", "", SERVER, LoginMode::DeviceCode).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--tenant-id \"a/b\" is not valid"),
            "{err}"
        );
        let err = SessionSpec::new("", "", TENANT, "", "a b", LoginMode::DeviceCode).unwrap_err();
        assert!(err.to_string().starts_with("--server-id"), "{err}");
        let err =
            SessionSpec::new("Mars", "", TENANT, "", SERVER, LoginMode::DeviceCode).unwrap_err();
        assert!(err.to_string().contains("unknown environment"), "{err}");
    }
}
