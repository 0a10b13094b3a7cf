//! What names a session: the parameters of kubelogin's `get-token`, validated per login mode and
//! resolved.
//!
//! Every kubeconfig user whose parameters resolve to the same authority, tenant, client, scopes,
//! login mode (and, for ROPC and managed identity, the same user or identity) shares one session,
//! and so one login: all AKS clusters of a tenant use the same server id.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::identity::cloud::{Authority, AuthorityError};
use crate::identity::{OidcTarget, Target};

/// The "Azure Kubernetes Service AAD Client" app, kubelogin's public client for user logins;
/// used when a user login names no client.
pub const AKS_CLIENT_ID: &str = "80faf920-1908-4b52-b5ef-a8e7bedfc67a";

/// Scopes every user session asks for besides the resource: a refresh token, an ID token and
/// the account's name.
const USER_SCOPES: [&str; 3] = ["offline_access", "openid", "profile"];

/// kubelogin's `--login` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginMode {
    DeviceCode,
    Interactive,
    ServicePrincipal,
    Ropc,
    ManagedIdentity,
    AzureCli,
    AzureDeveloperCli,
    WorkloadIdentity,
    AzurePipelines,
}

impl From<LoginMode> for broker_proto::v1::LoginMode {
    fn from(mode: LoginMode) -> Self {
        use broker_proto::v1::LoginMode as Wire;
        match mode {
            LoginMode::DeviceCode => Wire::DeviceCode,
            LoginMode::Interactive => Wire::Interactive,
            LoginMode::ServicePrincipal => Wire::ServicePrincipal,
            LoginMode::Ropc => Wire::Ropc,
            LoginMode::ManagedIdentity => Wire::ManagedIdentity,
            LoginMode::AzureCli => Wire::AzureCli,
            LoginMode::AzureDeveloperCli => Wire::AzureDeveloperCli,
            LoginMode::WorkloadIdentity => Wire::WorkloadIdentity,
            LoginMode::AzurePipelines => Wire::AzurePipelines,
        }
    }
}

impl LoginMode {
    /// The mode a wire value names; `None` for UNSPECIFIED, which names none.
    pub fn from_wire(mode: broker_proto::v1::LoginMode) -> Option<Self> {
        use broker_proto::v1::LoginMode as Wire;
        Some(match mode {
            Wire::Unspecified => return None,
            Wire::DeviceCode => LoginMode::DeviceCode,
            Wire::Interactive => LoginMode::Interactive,
            Wire::ServicePrincipal => LoginMode::ServicePrincipal,
            Wire::Ropc => LoginMode::Ropc,
            Wire::ManagedIdentity => LoginMode::ManagedIdentity,
            Wire::AzureCli => LoginMode::AzureCli,
            Wire::AzureDeveloperCli => LoginMode::AzureDeveloperCli,
            Wire::WorkloadIdentity => LoginMode::WorkloadIdentity,
            Wire::AzurePipelines => LoginMode::AzurePipelines,
        })
    }

    /// kubelogin's name for the mode, from the protocol's one table of names.
    pub fn name(self) -> &'static str {
        // Every mode here is a named wire mode: the conversion never gives UNSPECIFIED.
        broker_proto::login_mode_name(self.into()).unwrap_or("unspecified")
    }

    /// The mode kubelogin's `--login` value names.
    pub fn from_name(name: &str) -> Option<Self> {
        broker_proto::parse_login_mode(name).and_then(Self::from_wire)
    }

    /// A user signs in and the session keeps a refresh token; the other modes re-acquire
    /// tokens with an application's credential or a local tool.
    pub fn keeps_refresh_token(self) -> bool {
        matches!(
            self,
            LoginMode::DeviceCode | LoginMode::Interactive | LoginMode::Ropc
        )
    }

    /// Signing in needs the person at the keyboard.
    pub fn prompts(self) -> bool {
        matches!(self, LoginMode::DeviceCode | LoginMode::Interactive)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("{flag} is required")]
    Missing { flag: &'static str },
    #[error("{flag} is required with --login {mode}")]
    MissingFor {
        flag: &'static str,
        mode: &'static str,
    },
    #[error("{flag} {value:?} is not valid: {why}")]
    Invalid {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{flag} is not supported by this token-broker yet: {why}")]
    Unsupported {
        flag: &'static str,
        why: &'static str,
    },
}

/// A session's parameters as a caller gives them; an empty field is "not given".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecInput {
    pub environment: String,
    pub authority_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub server_id: String,
    pub login_mode: Option<LoginMode>,
    pub username: String,
    pub identity_resource_id: String,
    pub login_hint: String,
    pub redirect_url: String,
    pub subscription: String,
    pub azure_config_dir: String,
    pub legacy: bool,
    pub pop_claims: String,
    pub service_connection_id: String,
    pub oidc_issuer_url: String,
    pub oidc_extra_scopes: Vec<String>,
    pub oidc_use_access_token: bool,
    pub oidc_auth_params: Vec<String>,
    pub oidc_certificate_authority: String,
}

impl SpecInput {
    /// A session spec as clients send it: the profile it names (empty for none) and the
    /// fields given over it. `Err` carries the number of a login mode this brokerd does not
    /// know.
    pub fn from_wire(spec: broker_proto::v1::SessionSpec) -> Result<(String, SpecInput), i32> {
        let login_mode = match broker_proto::v1::LoginMode::try_from(spec.login_mode) {
            Ok(mode) => LoginMode::from_wire(mode),
            Err(_) => return Err(spec.login_mode),
        };
        let input = SpecInput {
            environment: spec.environment,
            authority_host: spec.authority_host,
            tenant_id: spec.tenant_id,
            client_id: spec.client_id,
            server_id: spec.server_id,
            login_mode,
            username: spec.username,
            identity_resource_id: spec.identity_resource_id,
            login_hint: spec.login_hint,
            redirect_url: spec.redirect_url,
            subscription: spec.subscription,
            azure_config_dir: spec.azure_config_dir,
            legacy: spec.legacy,
            pop_claims: spec.pop_claims,
            service_connection_id: spec.service_connection_id,
            oidc_issuer_url: spec.oidc_issuer_url,
            oidc_extra_scopes: spec.oidc_extra_scopes,
            oidc_use_access_token: spec.oidc_use_access_token,
            oidc_auth_params: spec.oidc_auth_params,
            oidc_certificate_authority: spec.oidc_certificate_authority,
        };
        Ok((spec.profile, input))
    }
}

/// A session's parameters as given, plus the authority they resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// As given (`--environment`); kept to show and to rebuild the login command.
    pub environment: String,
    /// As given (`--authority-host`); wins over `environment` when set.
    pub authority_host: String,
    pub authority: Authority,
    /// Empty for managed identity, and for the Azure CLIs when their default tenant applies.
    pub tenant_id: String,
    /// Empty for the Azure CLIs, and for a system-assigned managed identity.
    pub client_id: String,
    pub server_id: String,
    pub login_mode: LoginMode,
    /// ROPC only.
    pub username: String,
    /// Managed identity only.
    pub identity_resource_id: String,
    /// Device code and interactive: the account the session signs in as (lower case); empty
    /// for whoever signs in.
    pub login_hint: String,
    /// Interactive only: where Entra sends the browser back. Not part of the identity.
    pub redirect_url: String,
    /// Azure CLI only: the subscription `az` is asked for.
    pub subscription: String,
    /// Azure CLI only: its configuration directory (absolute); empty for its default.
    pub azure_config_dir: String,
    /// Azure Pipelines only: the service connection.
    pub service_connection_id: String,
    /// Interactive, ROPC, service principal: the cluster's ARM id for proof-of-possession
    /// tokens (`--pop-claims u=…`); empty for bearer tokens. That PoP is wanted is part of the
    /// identity; the cluster is not (one PoP access token serves every Arc cluster, each
    /// getting its own signed wrapper).
    pub pop_u: String,
    /// Set for a session with any OpenID Connect issuer (the authority is then the issuer).
    pub oidc: Option<OidcSpec>,
}

/// What an OpenID Connect session asks its issuer for, besides the client and the grant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OidcSpec {
    /// The issuer as given (Kubernetes compares it as text with the token's `iss`).
    pub issuer: String,
    /// Scopes besides `openid`, in the order given, without repeats.
    pub extra_scopes: Vec<String>,
    /// Serve the access token instead of the ID token.
    pub use_access_token: bool,
    /// Extra parameters of the authorization request, `key=value`.
    pub auth_params: Vec<(String, String)>,
    /// PEM certificates trusted for this issuer besides the system's; empty for none. Not
    /// part of the identity.
    pub certificate_authority: String,
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
    pub fn new(input: &SpecInput) -> Result<Self, SpecError> {
        use LoginMode::*;
        let mode = input.login_mode.unwrap_or(DeviceCode);
        if !input.oidc_issuer_url.trim().is_empty() {
            return Self::new_oidc(input, mode);
        }
        let authority = Authority::resolve(&input.environment, &input.authority_host)?;
        let server_id = input.server_id.trim();
        if server_id.is_empty() {
            return Err(SpecError::Missing {
                flag: "--server-id",
            });
        }
        check_token_value("--server-id", server_id)?;

        let tenant_id = input.tenant_id.trim();
        let tenant_needed = matches!(
            mode,
            DeviceCode | Interactive | ServicePrincipal | Ropc | WorkloadIdentity | AzurePipelines
        );
        if tenant_needed && tenant_id.is_empty() {
            return Err(SpecError::Missing {
                flag: "--tenant-id",
            });
        }
        if !tenant_id.is_empty()
            && let Err(why) = broker_proto::kubelogin::check_tenant(tenant_id)
        {
            return Err(SpecError::Invalid {
                flag: "--tenant-id",
                value: tenant_id.into(),
                why,
            });
        }
        if mode == Ropc && matches!(tenant_id, "common" | "consumers") {
            return Err(SpecError::Invalid {
                flag: "--tenant-id",
                value: tenant_id.into(),
                why: "ROPC needs a specific tenant (Entra refuses common and consumers)",
            });
        }

        let client_id = match (mode, input.client_id.trim()) {
            (DeviceCode | Interactive | Ropc, "") => AKS_CLIENT_ID,
            (ServicePrincipal | WorkloadIdentity | AzurePipelines, "") => {
                return Err(SpecError::MissingFor {
                    flag: "--client-id",
                    mode: mode.name(),
                });
            }
            (AzureCli | AzureDeveloperCli, _) => "",
            (_, id) => id,
        };
        check_token_value("--client-id", client_id)?;

        let username = match (mode, input.username.trim()) {
            (Ropc, "") => {
                return Err(SpecError::MissingFor {
                    flag: "--username",
                    mode: mode.name(),
                });
            }
            (Ropc, name) => name,
            _ => "",
        };
        let identity_resource_id = match mode {
            ManagedIdentity => input.identity_resource_id.trim(),
            _ => "",
        };
        if !identity_resource_id.is_empty() && !client_id.is_empty() {
            return Err(SpecError::Invalid {
                flag: "--identity-resource-id",
                value: identity_resource_id.into(),
                why: "name a user-assigned identity by --client-id or by --identity-resource-id, \
                      not both",
            });
        }
        check_token_value("--identity-resource-id", identity_resource_id)?;

        // kubelogin's flags that belong to some modes only are ignored by the others, as
        // kubelogin ignores them; where they mean something they are checked here.
        let only = |modes: &[LoginMode], value: &str| {
            if modes.contains(&mode) {
                value.trim().to_string()
            } else {
                String::new()
            }
        };
        let login_hint = only(&[DeviceCode, Interactive], &input.login_hint).to_ascii_lowercase();
        check_account("--login-hint", &login_hint)?;
        let redirect_url = only(&[Interactive], &input.redirect_url);
        if !redirect_url.is_empty() {
            check_redirect_url(&redirect_url)?;
        }
        let subscription = only(&[AzureCli], &input.subscription);
        // An id or a display name (which may hold spaces), as azidentity allows: never
        // something `az` could read as an option.
        let subscription_ok = subscription.len() <= 256
            && !subscription.starts_with('-')
            && subscription
                .chars()
                .all(|c| c.is_alphanumeric() || " -_.()".contains(c));
        if !subscription_ok {
            return Err(SpecError::Invalid {
                flag: "--subscription",
                value: subscription.chars().take(60).collect(),
                why: "a subscription is an id or a name (letters, digits, spaces, - _ . ( ))",
            });
        }
        let azure_config_dir = only(&[AzureCli], &input.azure_config_dir);
        if !azure_config_dir.is_empty() && !azure_config_dir.starts_with('/') {
            return Err(SpecError::Invalid {
                flag: "AZURE_CONFIG_DIR",
                value: azure_config_dir,
                why: "it must be an absolute path",
            });
        }
        let service_connection_id = only(&[AzurePipelines], &input.service_connection_id);
        if mode == AzurePipelines && service_connection_id.is_empty() {
            return Err(SpecError::MissingFor {
                flag: "--azure-pipelines-service-connection-id",
                mode: mode.name(),
            });
        }
        check_token_value(
            "--azure-pipelines-service-connection-id",
            &service_connection_id,
        )?;
        if input.legacy && matches!(mode, DeviceCode | ServicePrincipal) {
            return Err(SpecError::Unsupported {
                flag: "--legacy",
                why: "Entra v1.0 tokens (audience spn:<server id>); drop the flag: AKS takes \
                      v2.0 tokens",
            });
        }
        // Proof-of-possession (Azure Arc): only the u claim is used, as kubelogin uses it.
        let pop_u = if matches!(mode, Interactive | Ropc | ServicePrincipal) {
            pop_u_claim(&input.pop_claims)?
        } else {
            String::new()
        };

        Ok(SessionSpec {
            environment: input.environment.trim().to_string(),
            authority_host: input.authority_host.trim().to_string(),
            authority,
            // Tenants are GUIDs or domain names: both case-insensitive.
            tenant_id: if mode == ManagedIdentity {
                String::new()
            } else {
                tenant_id.to_ascii_lowercase()
            },
            client_id: normalise_guid(client_id),
            server_id: normalise_guid(server_id),
            login_mode: mode,
            username: username.to_ascii_lowercase(),
            identity_resource_id: identity_resource_id.to_string(),
            login_hint,
            redirect_url,
            subscription,
            azure_config_dir,
            service_connection_id,
            pop_u,
            oidc: None,
        })
    }

    /// A session with any OpenID Connect issuer (int128/kubelogin's flags).
    fn new_oidc(input: &SpecInput, mode: LoginMode) -> Result<Self, SpecError> {
        use LoginMode::*;
        let issuer = input.oidc_issuer_url.trim();
        let authority = Authority::from_host(issuer).map_err(|_| SpecError::Invalid {
            flag: "--oidc-issuer-url",
            value: issuer.chars().take(200).collect(),
            why: "an issuer is an https URL (http only for loopback), without query or fragment",
        })?;
        if !matches!(mode, DeviceCode | Interactive | Ropc | ServicePrincipal) {
            return Err(SpecError::Invalid {
                flag: "--grant-type",
                value: mode.name().into(),
                why: "an OpenID Connect issuer takes authcode, device-code, password or \
                      client-credentials",
            });
        }
        let client_id = input.client_id.trim();
        if client_id.is_empty() {
            return Err(SpecError::Missing {
                flag: "--oidc-client-id",
            });
        }
        check_token_value("--oidc-client-id", client_id)?;
        let username = input.username.trim();
        if mode == Ropc && username.is_empty() {
            return Err(SpecError::MissingFor {
                flag: "--username",
                mode: mode.name(),
            });
        }
        let mut extra_scopes: Vec<String> = Vec::new();
        for scope in &input.oidc_extra_scopes {
            let scope = scope.trim();
            check_token_value("--oidc-extra-scope", scope)?;
            if !scope.is_empty() && scope != "openid" && !extra_scopes.iter().any(|s| s == scope) {
                extra_scopes.push(scope.to_string());
            }
        }
        let mut auth_params = Vec::new();
        for pair in &input.oidc_auth_params {
            let (key, value) = pair.split_once('=').ok_or(SpecError::Invalid {
                flag: "--oidc-auth-request-extra-params",
                value: pair.chars().take(80).collect(),
                why: "expected key=value",
            })?;
            // What the flow itself sets is not the caller's to change.
            const OWN: &[&str] = &[
                "client_id",
                "redirect_uri",
                "response_type",
                "scope",
                "state",
                "code_challenge",
                "code_challenge_method",
                "nonce",
            ];
            if key.is_empty() || OWN.contains(&key) || pair.chars().any(char::is_control) {
                return Err(SpecError::Invalid {
                    flag: "--oidc-auth-request-extra-params",
                    value: pair.chars().take(80).collect(),
                    why: "a parameter of the authorization request the flow does not set itself",
                });
            }
            auth_params.push((key.to_string(), value.to_string()));
        }
        let certificate_authority = input.oidc_certificate_authority.trim().to_string();
        check_certificate_authority(&certificate_authority)?;
        let redirect_url = if mode == Interactive {
            input.redirect_url.trim().to_string()
        } else {
            String::new()
        };
        if !redirect_url.is_empty() {
            check_redirect_url(&redirect_url)?;
        }
        let login_hint = if matches!(mode, DeviceCode | Interactive) {
            input.login_hint.trim().to_ascii_lowercase()
        } else {
            String::new()
        };
        check_account("--login-hint", &login_hint)?;
        Ok(SessionSpec {
            environment: String::new(),
            authority_host: String::new(),
            authority,
            tenant_id: String::new(),
            client_id: client_id.to_string(),
            server_id: String::new(),
            login_mode: mode,
            username: if mode == Ropc {
                username.to_string()
            } else {
                String::new()
            },
            identity_resource_id: String::new(),
            login_hint,
            redirect_url,
            subscription: String::new(),
            azure_config_dir: String::new(),
            service_connection_id: String::new(),
            pop_u: String::new(),
            oidc: Some(OidcSpec {
                issuer: issuer.to_string(),
                extra_scopes,
                use_access_token: input.oidc_use_access_token,
                auth_params,
                certificate_authority,
            }),
        })
    }

    /// `<server id>/.default`, and for user sign-ins the user scopes, in the order Entra
    /// expects them.
    pub fn scopes(&self) -> Vec<String> {
        if let Some(oidc) = &self.oidc {
            let mut scopes = vec!["openid".to_string()];
            scopes.extend(oidc.extra_scopes.iter().cloned());
            return scopes;
        }
        let mut scopes = vec![format!("{}/.default", self.server_id)];
        if self.login_mode.keeps_refresh_token() {
            scopes.extend(USER_SCOPES.iter().map(|s| s.to_string()));
        }
        scopes
    }

    pub fn target(&self) -> Target {
        Target {
            authority: self.authority.clone(),
            tenant: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            scopes: self.scopes(),
            oidc: self.oidc.as_ref().map(|oidc| OidcTarget {
                issuer: oidc.issuer.clone(),
                use_access_token: oidc.use_access_token,
                auth_params: oidc.auth_params.clone(),
                certificate_authority: oidc.certificate_authority.clone(),
            }),
            client_secret: None,
            pop: None,
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
            &self.username,
            &self.identity_resource_id,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let oidc_issuer = self
            .oidc
            .as_ref()
            .map(|o| o.issuer.clone())
            .unwrap_or_default();
        let pop = if self.pop_u.is_empty() { "" } else { "1" }.to_string();
        let use_access_token = match &self.oidc {
            Some(o) if o.use_access_token => "1".to_string(),
            _ => String::new(),
        };
        // Parameters added later count only when given, so that every session named before
        // them keeps its id (and its refresh token in the keyring).
        for (name, value) in [
            ("login_hint", &self.login_hint),
            ("subscription", &self.subscription),
            ("azure_config_dir", &self.azure_config_dir),
            ("service_connection_id", &self.service_connection_id),
            ("oidc_issuer", &oidc_issuer),
            ("oidc_use_access_token", &use_access_token),
            ("pop", &pop),
        ] {
            if !value.is_empty() {
                hasher.update(name.as_bytes());
                hasher.update([b'=']);
                hasher.update(value.as_bytes());
                hasher.update([0u8]);
            }
        }
        let digest = hasher.finalize();
        SessionId(digest[..6].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A short description for logs and messages: no secrets, just what names the session.
    pub fn describe(&self) -> String {
        if let Some(oidc) = &self.oidc {
            return format!(
                "client {} at {} ({})",
                self.client_id,
                oidc.issuer,
                self.login_mode.name()
            );
        }
        let tenant = if self.tenant_id.is_empty() {
            "the default tenant"
        } else {
            &self.tenant_id
        };
        format!(
            "{} in {}{} ({})",
            self.server_id,
            if self.tenant_id.is_empty() {
                ""
            } else {
                "tenant "
            },
            tenant,
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

/// `--certificate-authority[-data]`: PEM certificates, at most 32 KiB of them (the issuer's
/// own CA chain travels with every request; a whole system bundle does not belong here), each
/// one that parses as a certificate.
fn check_certificate_authority(pem: &str) -> Result<(), SpecError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if pem.is_empty() {
        return Ok(());
    }
    let invalid = |why| SpecError::Invalid {
        flag: "--certificate-authority",
        value: format!("{} bytes of PEM", pem.len()),
        why,
    };
    if pem.len() > broker_proto::kubelogin::MAX_CERTIFICATE_AUTHORITY {
        return Err(invalid(
            "at most 32 KiB of certificates: the issuer's own CA chain",
        ));
    }
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|_| invalid("it is not PEM certificates"))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("it holds no PEM certificate"));
    }
    Ok(())
}

/// The `u` claim of `--pop-claims` (`u=<ARM id>[,k=v…]`, as the clients canonicalise it);
/// empty when there are none.
fn pop_u_claim(claims: &str) -> Result<String, SpecError> {
    let claims = claims.trim();
    if claims.is_empty() {
        return Ok(String::new());
    }
    let u = claims
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == "u")
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= 1024)
        .ok_or(SpecError::Invalid {
            flag: "--pop-claims",
            value: claims.chars().take(80).collect(),
            why: "the u claim (the cluster's ARM id) is required",
        })?;
    if u.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(SpecError::Invalid {
            flag: "--pop-claims",
            value: u.chars().take(80).collect(),
            why: "the u claim is an ARM id: no quotes, backslashes or control characters",
        });
    }
    Ok(u.to_string())
}

/// An account name as Entra spells one (`alice@contoso.com`): one short line, no spaces.
fn check_account(flag: &'static str, value: &str) -> Result<(), SpecError> {
    check_token_value(flag, value)?;
    if value.len() > 256 {
        return Err(SpecError::Invalid {
            flag,
            value: value.chars().take(40).collect(),
            why: "an account name is at most 256 characters",
        });
    }
    Ok(())
}

/// `--redirect-url`: Entra sends the browser back to a loopback address over plain http (any
/// port it is given, as it ignores the port of a loopback redirect URI), and brokerd must be
/// able to listen there.
fn check_redirect_url(value: &str) -> Result<(), SpecError> {
    let invalid = |why| SpecError::Invalid {
        flag: "--redirect-url",
        value: value.chars().take(200).collect(),
        why,
    };
    let url = url::Url::parse(value).map_err(|_| invalid("it is not a URL"))?;
    if url.scheme() != "http" {
        return Err(invalid(
            "brokerd receives the browser on http://localhost:PORT/…",
        ));
    }
    if !matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) {
        return Err(invalid("the host must be localhost, 127.0.0.1 or [::1]"));
    }
    if url.port().is_none() {
        return Err(invalid("it needs a port, such as http://localhost:8400/"));
    }
    if url.fragment().is_some() || url.query().is_some() {
        return Err(invalid("it must not carry a query or a fragment"));
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

/// The session as the wire names it: what clients are told, and what `brokerctl login …`
/// commands are built from.
impl From<&SessionSpec> for broker_proto::v1::SessionSpec {
    fn from(spec: &SessionSpec) -> Self {
        broker_proto::v1::SessionSpec {
            environment: spec.environment.clone(),
            authority_host: spec.authority_host.clone(),
            tenant_id: spec.tenant_id.clone(),
            client_id: spec.client_id.clone(),
            server_id: spec.server_id.clone(),
            login_mode: broker_proto::v1::LoginMode::from(spec.login_mode) as i32,
            profile: String::new(),
            username: spec.username.clone(),
            identity_resource_id: spec.identity_resource_id.clone(),
            login_hint: spec.login_hint.clone(),
            redirect_url: spec.redirect_url.clone(),
            subscription: spec.subscription.clone(),
            azure_config_dir: spec.azure_config_dir.clone(),
            legacy: false,
            pop_claims: if spec.pop_u.is_empty() {
                String::new()
            } else {
                format!("u={}", spec.pop_u)
            },
            service_connection_id: spec.service_connection_id.clone(),
            oidc_issuer_url: spec
                .oidc
                .as_ref()
                .map(|o| o.issuer.clone())
                .unwrap_or_default(),
            oidc_extra_scopes: spec
                .oidc
                .as_ref()
                .map(|o| o.extra_scopes.clone())
                .unwrap_or_default(),
            oidc_use_access_token: spec.oidc.as_ref().is_some_and(|o| o.use_access_token),
            oidc_auth_params: spec
                .oidc
                .iter()
                .flat_map(|o| &o.auth_params)
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            oidc_certificate_authority: spec
                .oidc
                .as_ref()
                .map(|o| o.certificate_authority.clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
    const TENANT: &str = "00000000-0000-0000-0000-000000000001";
    // SHA-256 over the parts as the first release hashed them, computed outside this code.
    const PINNED_ID: &str = "8ce63678745d";

    fn input(mode: LoginMode) -> SpecInput {
        SpecInput {
            tenant_id: TENANT.into(),
            server_id: SERVER.into(),
            login_mode: Some(mode),
            ..SpecInput::default()
        }
    }

    fn spec(env: &str, host: &str, tenant: &str, client: &str, mode: LoginMode) -> SessionSpec {
        SessionSpec::new(&SpecInput {
            environment: env.into(),
            authority_host: host.into(),
            tenant_id: tenant.into(),
            client_id: client.into(),
            ..input(mode)
        })
        .unwrap()
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
    fn user_sessions_ask_for_a_refresh_token_and_app_sessions_do_not() {
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
        let spn = spec("", "", TENANT, "app", LoginMode::ServicePrincipal);
        assert_eq!(spn.scopes(), vec![format!("{SERVER}/.default")]);
    }

    #[test]
    fn each_mode_requires_what_it_needs() {
        let err = |i: SpecInput| SessionSpec::new(&i).unwrap_err().to_string();
        assert_eq!(
            err(SpecInput {
                tenant_id: String::new(),
                ..input(LoginMode::DeviceCode)
            }),
            "--tenant-id is required"
        );
        assert_eq!(
            err(SpecInput {
                server_id: String::new(),
                ..input(LoginMode::DeviceCode)
            }),
            "--server-id is required"
        );
        assert_eq!(
            err(input(LoginMode::ServicePrincipal)),
            "--client-id is required with --login spn"
        );
        assert_eq!(
            err(input(LoginMode::WorkloadIdentity)),
            "--client-id is required with --login workloadidentity"
        );
        assert_eq!(
            err(input(LoginMode::Ropc)),
            "--username is required with --login ropc"
        );
        assert!(
            err(SpecInput {
                tenant_id: "common".into(),
                username: "u".into(),
                ..input(LoginMode::Ropc)
            })
            .contains("ROPC needs a specific tenant")
        );
        assert!(
            err(SpecInput {
                client_id: "c".into(),
                identity_resource_id: "/subs/x".into(),
                ..input(LoginMode::ManagedIdentity)
            })
            .contains("not both")
        );
        assert!(
            err(SpecInput {
                tenant_id: "a/b".into(),
                ..input(LoginMode::DeviceCode)
            })
            .starts_with("--tenant-id \"a/b\" is not valid")
        );
        assert!(
            err(SpecInput {
                environment: "Mars".into(),
                ..input(LoginMode::DeviceCode)
            })
            .contains("unknown environment")
        );
        // The modes that need no tenant.
        for mode in [
            LoginMode::ManagedIdentity,
            LoginMode::AzureCli,
            LoginMode::AzureDeveloperCli,
        ] {
            assert!(
                SessionSpec::new(&SpecInput {
                    tenant_id: String::new(),
                    ..input(mode)
                })
                .is_ok()
            );
        }
    }

    #[test]
    fn the_user_and_the_identity_separate_sessions() {
        let ropc = |user: &str| {
            SessionSpec::new(&SpecInput {
                username: user.into(),
                ..input(LoginMode::Ropc)
            })
            .unwrap()
        };
        assert_ne!(ropc("alice@x").id(), ropc("bob@x").id());
        assert_eq!(ropc("Alice@X").id(), ropc("alice@x").id());
        let msi = |client: &str| {
            SessionSpec::new(&SpecInput {
                client_id: client.into(),
                ..input(LoginMode::ManagedIdentity)
            })
            .unwrap()
        };
        assert_ne!(
            msi("").id(),
            msi("11111111-1111-1111-1111-111111111111").id()
        );
    }

    #[test]
    fn sessions_named_before_the_new_flags_keep_their_ids() {
        // Pinned: the id a device code session had before login hints existed. A change here
        // would orphan every stored refresh token.
        let spec = SessionSpec::new(&input(LoginMode::DeviceCode)).unwrap();
        assert_eq!(spec.id().as_str(), PINNED_ID);
        // Flags of other modes are ignored, as kubelogin ignores them: same session.
        let ignored = SessionSpec::new(&SpecInput {
            subscription: "sub".into(),
            service_connection_id: "sc".into(),
            redirect_url: "http://localhost:8400/".into(),
            ..input(LoginMode::DeviceCode)
        })
        .unwrap();
        assert_eq!(ignored.id(), spec.id());
    }

    #[test]
    fn each_account_of_a_tenant_is_its_own_session() {
        let hinted = |hint: &str| {
            SessionSpec::new(&SpecInput {
                login_hint: hint.into(),
                ..input(LoginMode::Interactive)
            })
            .unwrap()
        };
        let alice = hinted("alice@contoso.example");
        assert_eq!(alice.id(), hinted("Alice@Contoso.Example").id());
        assert_ne!(alice.id(), hinted("bob@contoso.example").id());
        assert_ne!(alice.id(), hinted("").id());
        assert_eq!(alice.login_hint, "alice@contoso.example");
        let err = SessionSpec::new(&SpecInput {
            login_hint: "alice smith".into(),
            ..input(LoginMode::DeviceCode)
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("--login-hint"), "{err}");
    }

    #[test]
    fn redirect_urls_are_loopback_http_with_a_port() {
        let with = |url: &str| {
            SessionSpec::new(&SpecInput {
                redirect_url: url.into(),
                ..input(LoginMode::Interactive)
            })
        };
        for good in [
            "http://localhost:8400/",
            "http://127.0.0.1:8400/callback",
            "http://[::1]:9000",
        ] {
            let spec = with(good).unwrap();
            assert_eq!(spec.redirect_url, good);
            assert_eq!(
                spec.id(),
                with("").unwrap().id(),
                "not part of the identity"
            );
        }
        for (bad, why) in [
            ("https://localhost:8400/", "http://localhost"),
            ("http://example.com:8400/", "the host must be"),
            ("http://localhost/", "it needs a port"),
            ("http://localhost:8400/?a=b", "query"),
            ("not a url", "not a URL"),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn azure_cli_subscription_and_config_dir_name_the_session() {
        let cli = |subscription: &str, dir: &str| {
            SessionSpec::new(&SpecInput {
                subscription: subscription.into(),
                azure_config_dir: dir.into(),
                ..input(LoginMode::AzureCli)
            })
        };
        let plain = cli("", "").unwrap();
        let sub = cli("My Subscription (dev)", "").unwrap();
        let dir = cli("", "/home/u/.azure-work").unwrap();
        assert_ne!(plain.id(), sub.id());
        assert_ne!(plain.id(), dir.id());
        assert_ne!(sub.id(), dir.id());
        for bad in ["--help", "a;b", "x\ny"] {
            assert!(cli(bad, "").is_err(), "{bad:?}");
        }
        assert!(cli("", "relative/dir").is_err());
    }

    #[test]
    fn pipelines_need_their_service_connection_and_unsupported_flags_say_so() {
        let pipelines = |sc: &str| {
            SessionSpec::new(&SpecInput {
                client_id: "00000000-0000-0000-0000-0000000000aa".into(),
                service_connection_id: sc.into(),
                ..input(LoginMode::AzurePipelines)
            })
        };
        let err = pipelines("").unwrap_err().to_string();
        assert!(
            err.contains("--azure-pipelines-service-connection-id"),
            "{err}"
        );
        let a = pipelines("sc-1").unwrap();
        assert_ne!(a.id(), pipelines("sc-2").unwrap().id());
        let legacy = SessionSpec::new(&SpecInput {
            legacy: true,
            ..input(LoginMode::DeviceCode)
        })
        .unwrap_err();
        assert!(
            legacy.to_string().starts_with("--legacy is not supported"),
            "{legacy}"
        );
        // PoP is part of the identity; the cluster's u claim is not.
        let pop = |claims: &str| {
            SessionSpec::new(&SpecInput {
                pop_claims: claims.into(),
                ..input(LoginMode::Interactive)
            })
        };
        let arc1 = pop("u=/x/arc1").unwrap();
        assert_eq!(arc1.pop_u, "/x/arc1");
        assert_eq!(arc1.id(), pop("k=v,u=/x/arc2").unwrap().id());
        assert_ne!(arc1.id(), pop("").unwrap().id());
        assert!(pop("k=v").unwrap_err().to_string().contains("the u claim"));
        // Where kubelogin ignores them (azurecli, msi, ...), so does brokerd.
        assert!(
            SessionSpec::new(&SpecInput {
                legacy: true,
                pop_claims: "u=/x".into(),
                ..input(LoginMode::AzureCli)
            })
            .is_ok()
        );
    }
}
