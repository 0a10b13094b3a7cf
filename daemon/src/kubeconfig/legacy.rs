//! The legacy `azure` auth-provider (removed from kubectl 1.26): its parameters become
//! broker-shim's flags, its cached tokens are dropped.

use broker_proto::kubelogin::GetTokenOptions;
use broker_proto::v1::Credentials;
use yaml_edit::{Mapping, YamlValue};

use super::azure::runtime_spec;
use super::tree::get_text;
use super::{ConvertOptions, Converted, EXEC_API_VERSION, INSTALL_HINT, Origin, Outcome};

pub(super) fn convert_auth_provider(
    user: &Mapping,
    provider: &Mapping,
    name: &str,
    convert: &ConvertOptions<'_>,
) -> Outcome {
    let command = convert.command;
    let config = provider.get_mapping("config");
    let field = |key: &str| {
        config
            .as_ref()
            .and_then(|c| get_text(c, key))
            .unwrap_or_default()
    };
    if field("config-mode") != "1" {
        return Outcome::Skipped(
            "it uses AAD v1 (config-mode is not \"1\"), whose tokens need the spn: audience \
             prefix; token-broker issues v2 tokens (move the cluster to AKS-managed Entra ID)"
                .into(),
        );
    }
    let mut options = GetTokenOptions::default();
    options.spec.server_id = field("apiserver-id");
    options.spec.client_id = field("client-id");
    options.spec.tenant_id = field("tenant-id");
    options.spec.environment = field("environment");
    options.login = Some("devicecode".into());
    let spec = match runtime_spec(&options, convert) {
        Ok(spec) => spec,
        Err(why) => return Outcome::Skipped(why),
    };
    let dropped: Vec<String> = ["access-token", "refresh-token"]
        .iter()
        .map(|k| field(k))
        .filter(|v| !v.is_empty())
        .collect();

    let mut exec = std::collections::BTreeMap::new();
    exec.insert("apiVersion".to_string(), YamlValue::from(EXEC_API_VERSION));
    exec.insert("command".to_string(), YamlValue::from(command));
    exec.insert(
        "args".to_string(),
        YamlValue::Sequence(options.to_args().into_iter().map(YamlValue::from).collect()),
    );
    exec.insert(
        "interactiveMode".to_string(),
        YamlValue::from("IfAvailable"),
    );
    exec.insert("provideClusterInfo".to_string(), YamlValue::from(false));
    exec.insert("installHint".to_string(), YamlValue::from(INSTALL_HINT));
    user.remove("auth-provider");
    user.set("exec", YamlValue::Mapping(exec));
    Outcome::Converted(Box::new(Converted {
        user: name.to_string(),
        origin: Origin::AzureAuthProvider,
        spec,
        secrets: Credentials::default(),
        dropped,
    }))
}
