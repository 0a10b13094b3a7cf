//! The session flags, spelled as kubelogin's `get-token` spells them (plus `--profile`), with
//! kubelogin's environment variables applied over them exactly as broker-shim applies them.

use anyhow::{Result, anyhow};
use broker_proto::kubelogin::GetTokenOptions;
use broker_proto::v1;
use brokerd::config::Profile;
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// A profile of brokerd's configuration; the flags below override its fields
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The cluster's server (resource) application id, e.g. AKS's 6dae42f8-…
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,
    /// The client (application) id [default for user logins: the AKS client, 80faf920-…]
    #[arg(long, visible_alias = "oidc-client-id", value_name = "ID")]
    pub client_id: Option<String>,
    /// Any OpenID Connect issuer instead of Entra (int128/kubelogin's flag); --server-id,
    /// --tenant-id and --environment are then not used
    #[arg(long, value_name = "URL")]
    pub oidc_issuer_url: Option<String>,
    /// OpenID Connect: a scope to ask for besides openid (repeatable)
    #[arg(long, value_name = "SCOPE")]
    pub oidc_extra_scope: Vec<String>,
    /// OpenID Connect: serve the access token instead of the ID token
    #[arg(long)]
    pub oidc_use_access_token: bool,
    /// OpenID Connect: a PEM file of certificate authorities to trust for the issuer besides
    /// the system's (repeatable)
    #[arg(long, value_name = "FILE")]
    pub certificate_authority: Vec<String>,
    /// OpenID Connect: the same, base64-encoded PEM (repeatable)
    #[arg(long, value_name = "BASE64")]
    pub certificate_authority_data: Vec<String>,
    /// OpenID Connect: KEY=VALUE added to the authorization request (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub oidc_auth_request_extra_params: Vec<String>,
    /// The tenant id or domain
    #[arg(long, short = 't', value_name = "ID")]
    pub tenant_id: Option<String>,
    /// AzurePublicCloud (default), AzureChinaCloud or AzureUSGovernmentCloud
    #[arg(long, short = 'e', value_name = "NAME")]
    pub environment: Option<String>,
    /// The authority host, overriding --environment (http only for loopback)
    #[arg(long, value_name = "URL")]
    pub authority_host: Option<String>,
    /// devicecode (default), interactive, spn, ropc, msi, azurecli, azd or workloadidentity
    #[arg(long, short = 'l', value_name = "MODE")]
    pub login: Option<String>,
    /// ROPC: the user to sign in as
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Managed identity: a user-assigned identity's ARM resource id
    #[arg(long, value_name = "ID")]
    pub identity_resource_id: Option<String>,
    /// Device code, interactive: the account to sign in as; each account is its own session
    #[arg(long, value_name = "USER")]
    pub login_hint: Option<String>,
    /// Interactive: where Entra sends the browser back (http://localhost:PORT/…)
    #[arg(long, value_name = "URL")]
    pub redirect_url: Option<String>,
    /// Azure CLI: the subscription (id or name) whose tenant az signs for
    #[arg(long, short = 's', value_name = "ID")]
    pub subscription: Option<String>,
    /// Proof-of-possession tokens (Azure Arc); needs --pop-claims
    #[arg(long, requires = "pop_claims")]
    pub pop_enabled: bool,
    /// Proof-of-possession: u=<the cluster's ARM id>[,key=value…]; needs --pop-enabled
    #[arg(long, value_name = "CLAIMS", requires = "pop_enabled")]
    pub pop_claims: Option<String>,
    /// Azure Pipelines: the service connection's id
    #[arg(long, value_name = "ID")]
    pub azure_pipelines_service_connection_id: Option<String>,
    /// Service principal: a PEM or PFX client certificate instead of a secret
    #[arg(long, value_name = "FILE")]
    pub client_certificate: Option<String>,
    /// Workload identity: the federated token file
    #[arg(long, value_name = "FILE")]
    pub federated_token_file: Option<String>,
    /// Ignore kubelogin's environment variables (AZURE_CLIENT_ID, AZURE_TENANT_ID, ...)
    #[arg(long)]
    pub disable_environment_override: bool,
    /// Read ARM_* variables instead of AZURE_* ones
    #[arg(long)]
    pub use_azurerm_env_vars: bool,
}

impl SpecArgs {
    fn is_empty(&self) -> bool {
        self.profile.is_none()
            && self.server_id.is_none()
            && self.tenant_id.is_none()
            && self.oidc_issuer_url.is_none()
    }

    /// Whether any flag that a profile can hold was given.
    pub fn names_session_fields(&self) -> bool {
        [
            &self.server_id,
            &self.client_id,
            &self.tenant_id,
            &self.environment,
            &self.authority_host,
            &self.login,
            &self.username,
            &self.identity_resource_id,
            &self.login_hint,
            &self.redirect_url,
            &self.subscription,
            &self.azure_pipelines_service_connection_id,
            &self.oidc_issuer_url,
            &self.pop_claims,
        ]
        .iter()
        .any(|v| v.is_some())
            || !self.oidc_extra_scope.is_empty()
            || !self.oidc_auth_request_extra_params.is_empty()
            || self.oidc_use_access_token
    }

    /// `profile` with the fields these flags give laid over it.
    pub fn over(&self, profile: &Profile) -> Profile {
        let pick = |flag: &Option<String>, old: &str| flag.clone().unwrap_or_else(|| old.into());
        let pick_list = |flags: &Vec<String>, old: &Vec<String>| {
            if flags.is_empty() { old } else { flags }.clone()
        };
        Profile {
            server_id: pick(&self.server_id, &profile.server_id),
            tenant_id: pick(&self.tenant_id, &profile.tenant_id),
            client_id: pick(&self.client_id, &profile.client_id),
            environment: pick(&self.environment, &profile.environment),
            authority_host: pick(&self.authority_host, &profile.authority_host),
            login: self.login.clone().or_else(|| profile.login.clone()),
            username: pick(&self.username, &profile.username),
            identity_resource_id: pick(&self.identity_resource_id, &profile.identity_resource_id),
            login_hint: pick(&self.login_hint, &profile.login_hint),
            redirect_url: pick(&self.redirect_url, &profile.redirect_url),
            subscription: pick(&self.subscription, &profile.subscription),
            service_connection_id: pick(
                &self.azure_pipelines_service_connection_id,
                &profile.service_connection_id,
            ),
            pop_claims: pick(&self.pop_claims, &profile.pop_claims),
            oidc_issuer_url: pick(&self.oidc_issuer_url, &profile.oidc_issuer_url),
            oidc_extra_scopes: pick_list(&self.oidc_extra_scope, &profile.oidc_extra_scopes),
            oidc_use_access_token: self.oidc_use_access_token || profile.oidc_use_access_token,
            oidc_auth_params: pick_list(
                &self.oidc_auth_request_extra_params,
                &profile.oidc_auth_params,
            ),
            allow_forwarding: profile.allow_forwarding,
        }
    }

    /// These flags with the session fields replaced by `profile`'s, and no profile name.
    pub fn with_fields_of(&self, profile: &Profile) -> SpecArgs {
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        SpecArgs {
            profile: None,
            server_id: some(&profile.server_id),
            client_id: some(&profile.client_id),
            tenant_id: some(&profile.tenant_id),
            environment: some(&profile.environment),
            authority_host: some(&profile.authority_host),
            login: profile.login.clone(),
            username: some(&profile.username),
            identity_resource_id: some(&profile.identity_resource_id),
            login_hint: some(&profile.login_hint),
            redirect_url: some(&profile.redirect_url),
            subscription: some(&profile.subscription),
            azure_pipelines_service_connection_id: some(&profile.service_connection_id),
            pop_enabled: !profile.pop_claims.is_empty(),
            pop_claims: some(&profile.pop_claims),
            oidc_issuer_url: some(&profile.oidc_issuer_url),
            oidc_extra_scope: profile.oidc_extra_scopes.clone(),
            oidc_use_access_token: profile.oidc_use_access_token,
            oidc_auth_request_extra_params: profile.oidc_auth_params.clone(),
            ..self.clone()
        }
    }

    /// The session and credentials these flags and the environment name.
    pub fn resolve(&self) -> Result<(v1::SessionSpec, v1::Credentials)> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut options = GetTokenOptions {
            spec: v1::SessionSpec {
                environment: text(&self.environment),
                authority_host: text(&self.authority_host),
                tenant_id: text(&self.tenant_id),
                client_id: text(&self.client_id),
                server_id: text(&self.server_id),
                profile: text(&self.profile),
                username: text(&self.username),
                identity_resource_id: text(&self.identity_resource_id),
                login_hint: text(&self.login_hint),
                redirect_url: text(&self.redirect_url),
                subscription: text(&self.subscription),
                service_connection_id: text(&self.azure_pipelines_service_connection_id),
                oidc_issuer_url: text(&self.oidc_issuer_url),
                oidc_extra_scopes: self.oidc_extra_scope.clone(),
                oidc_use_access_token: self.oidc_use_access_token,
                oidc_auth_params: self.oidc_auth_request_extra_params.clone(),
                pop_claims: text(&self.pop_claims),
                ..v1::SessionSpec::default()
            },
            credentials: v1::Credentials {
                client_certificate_path: text(&self.client_certificate),
                federated_token_file: text(&self.federated_token_file),
                ..v1::Credentials::default()
            },
            login: self.login.clone(),
            use_azurerm_env_vars: self.use_azurerm_env_vars,
            disable_environment_override: self.disable_environment_override,
            pop_enabled: self.pop_enabled,
            ca_files: self.certificate_authority.clone(),
            ca_data: self.certificate_authority_data.clone(),
            ..GetTokenOptions::default()
        };
        options.apply_environment(&|name| std::env::var(name).ok());
        options.finish().map_err(|e| anyhow!(e))
    }

    pub fn to_wire(&self) -> Result<v1::SessionSpec> {
        Ok(self.resolve()?.0)
    }
}

/// A session named by id (from `brokerctl status`), by profile, or by its flags.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// The session id `brokerctl status` shows
    #[arg(value_name = "SESSION", conflicts_with_all = ["server_id", "profile"])]
    pub session_id: Option<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
}

impl SessionArgs {
    pub fn to_wire(&self) -> Result<v1::SessionRef> {
        use v1::session_ref::Target;
        let target = match &self.session_id {
            Some(id) => Target::SessionId(id.clone()),
            None if self.spec.is_empty() => anyhow::bail!(
                "name a session: give its id (see `brokerctl status`), --profile, or --server-id \
                 and --tenant-id"
            ),
            None => Target::Spec(self.spec.to_wire()?),
        };
        Ok(v1::SessionRef {
            target: Some(target),
        })
    }
}
