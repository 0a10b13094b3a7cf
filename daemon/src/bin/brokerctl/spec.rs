//! The session flags, spelled as kubelogin's `get-token` spells them.

use anyhow::{Result, bail};
use broker_proto::v1;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct SpecArgs {
    /// The cluster's server (resource) application id, e.g. AKS's 6dae42f8-…
    #[arg(long, value_name = "ID")]
    pub server_id: String,
    /// The client application id [default: the AKS client, 80faf920-…]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The tenant id or domain
    #[arg(long, short = 't', value_name = "ID")]
    pub tenant_id: String,
    /// AzurePublicCloud, AzureChinaCloud or AzureUSGovernmentCloud
    #[arg(long, short = 'e', default_value = "AzurePublicCloud")]
    pub environment: String,
    /// The authority host, overriding --environment (http only for loopback)
    #[arg(long, value_name = "URL", env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    /// devicecode or interactive
    #[arg(long, short = 'l', default_value = "devicecode")]
    pub login: String,
}

impl SpecArgs {
    pub fn to_wire(&self) -> Result<v1::SessionSpec> {
        let Some(mode) = broker_proto::parse_login_mode(&self.login) else {
            bail!(
                "--login {:?} is not supported; use devicecode or interactive",
                self.login
            );
        };
        Ok(v1::SessionSpec {
            environment: self.environment.clone(),
            authority_host: self.authority_host.clone().unwrap_or_default(),
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone().unwrap_or_default(),
            server_id: self.server_id.clone(),
            login_mode: mode as i32,
        })
    }
}

/// A session named by id (from `brokerctl status`) or by its flags.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// The session id `brokerctl status` shows
    #[arg(value_name = "SESSION", conflicts_with = "server_id")]
    pub session_id: Option<String>,
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    #[arg(long, short = 't', value_name = "ID")]
    pub tenant_id: Option<String>,
    #[arg(long, short = 'e', default_value = "AzurePublicCloud")]
    pub environment: String,
    #[arg(long, value_name = "URL", env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    #[arg(long, short = 'l', default_value = "devicecode")]
    pub login: String,
}

impl SessionArgs {
    pub fn to_wire(&self) -> Result<v1::SessionRef> {
        use v1::session_ref::Target;
        if let Some(id) = &self.session_id {
            return Ok(v1::SessionRef {
                target: Some(Target::SessionId(id.clone())),
            });
        }
        let Some(server_id) = &self.server_id else {
            bail!(
                "name a session: give its id (see `brokerctl status`) or --server-id and --tenant-id"
            );
        };
        let spec = SpecArgs {
            server_id: server_id.clone(),
            client_id: self.client_id.clone(),
            tenant_id: self.tenant_id.clone().unwrap_or_default(),
            environment: self.environment.clone(),
            authority_host: self.authority_host.clone(),
            login: self.login.clone(),
        };
        Ok(v1::SessionRef {
            target: Some(Target::Spec(spec.to_wire()?)),
        })
    }
}
