//! The session flags, spelled as kubelogin's `get-token` spells them, plus `--profile`.

use anyhow::{Result, bail};
use broker_proto::v1;
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// A profile of brokerd's configuration; the flags below override its fields
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// The cluster's server (resource) application id, e.g. AKS's 6dae42f8-…
    #[arg(long, value_name = "ID")]
    pub server_id: Option<String>,
    /// The client application id [default: the AKS client, 80faf920-…]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// The tenant id or domain
    #[arg(long, short = 't', value_name = "ID")]
    pub tenant_id: Option<String>,
    /// AzurePublicCloud (default), AzureChinaCloud or AzureUSGovernmentCloud
    #[arg(long, short = 'e', value_name = "NAME")]
    pub environment: Option<String>,
    /// The authority host, overriding --environment (http only for loopback)
    #[arg(long, value_name = "URL", env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<String>,
    /// devicecode (default) or interactive
    #[arg(long, short = 'l', value_name = "MODE")]
    pub login: Option<String>,
}

impl SpecArgs {
    fn is_empty(&self) -> bool {
        self.profile.is_none() && self.server_id.is_none() && self.tenant_id.is_none()
    }

    pub fn to_wire(&self) -> Result<v1::SessionSpec> {
        if self.profile.is_none() {
            if self.server_id.is_none() {
                bail!("--server-id is required (or --profile)");
            }
            if self.tenant_id.is_none() {
                bail!("--tenant-id is required (or --profile)");
            }
        }
        let login_mode = match self.login.as_deref() {
            None => v1::LoginMode::Unspecified,
            Some(name) => broker_proto::parse_login_mode(name).ok_or_else(|| {
                anyhow::anyhow!("--login {name:?} is not supported; use devicecode or interactive")
            })?,
        };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(v1::SessionSpec {
            environment: text(&self.environment),
            authority_host: text(&self.authority_host),
            tenant_id: text(&self.tenant_id),
            client_id: text(&self.client_id),
            server_id: text(&self.server_id),
            login_mode: login_mode as i32,
            profile: text(&self.profile),
        })
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
            None if self.spec.is_empty() => bail!(
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
