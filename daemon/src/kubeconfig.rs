//! Converting kubeconfig users to broker-shim: those whose exec command is a kubelogin (Azure's
//! `kubelogin get-token`, or int128's `kubectl oidc-login get-token`) and those with the legacy
//! `azure` auth-provider.
//!
//! The YAML is edited in place (yaml-edit keeps a lossless syntax tree), so every other user,
//! cluster and context, every other key, the comments and the key order stay as they were. Only
//! the converted users' `exec` (or `auth-provider`) changes. Secrets found in them (a client
//! secret or password passed as an argument or in `env`, a legacy refresh token) leave the file:
//! the caller moves the ones worth keeping into the keyring.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use broker_proto::kubelogin::GetTokenOptions;
use broker_proto::v1::{Credentials, SessionSpec};
use yaml_edit::{Document, Mapping, YamlValue};

const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";
const INSTALL_HINT: &str = "broker-shim is part of token-broker: see its README to install it.\n";

/// `env` entries that carry secrets; they move to the keyring.
const SECRET_VARIABLES: &[(&str, SecretField)] = &[
    (
        "AAD_SERVICE_PRINCIPAL_CLIENT_SECRET",
        SecretField::ClientSecret,
    ),
    ("AZURE_CLIENT_SECRET", SecretField::ClientSecret),
    ("ARM_CLIENT_SECRET", SecretField::ClientSecret),
    (
        "AAD_SERVICE_PRINCIPAL_CLIENT_CERTIFICATE_PASSWORD",
        SecretField::CertificatePassword,
    ),
    (
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        SecretField::CertificatePassword,
    ),
    (
        "ARM_CLIENT_CERTIFICATE_PASSWORD",
        SecretField::CertificatePassword,
    ),
    ("AAD_USER_PRINCIPAL_PASSWORD", SecretField::Password),
    ("AZURE_PASSWORD", SecretField::Password),
];

#[derive(Clone, Copy, Debug)]
enum SecretField {
    ClientSecret,
    CertificatePassword,
    Password,
}

/// Where a converted user came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    AzureKubelogin,
    Int128Kubelogin,
    AzureAuthProvider,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::AzureKubelogin => "kubelogin get-token",
            Origin::Int128Kubelogin => "kubectl oidc-login get-token",
            Origin::AzureAuthProvider => "the legacy azure auth-provider",
        })
    }
}

/// A user that was converted: its session, and the secrets taken out of the file.
pub struct Converted {
    pub user: String,
    pub origin: Origin,
    pub spec: SessionSpec,
    /// Secrets to keep in the keyring (empty strings when there were none).
    pub secrets: Credentials,
    /// Secrets that were dropped rather than kept (a legacy auth-provider's tokens).
    pub dropped: Vec<String>,
}

impl Converted {
    pub fn has_secrets(&self) -> bool {
        let s = &self.secrets;
        !(s.client_secret.is_empty()
            && s.client_certificate_password.is_empty()
            && s.password.is_empty())
    }

    /// Every secret value taken out of the file, for masking them in diffs.
    pub fn secret_values(&self) -> Vec<&str> {
        let s = &self.secrets;
        [
            s.client_secret.as_str(),
            s.client_certificate_password.as_str(),
            s.password.as_str(),
        ]
        .into_iter()
        .chain(self.dropped.iter().map(String::as_str))
        .filter(|v| !v.is_empty())
        .collect()
    }
}

impl fmt::Debug for Converted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Converted")
            .field("user", &self.user)
            .field("origin", &self.origin)
            .field("spec", &self.spec)
            .field("secrets", &self.has_secrets())
            .finish_non_exhaustive()
    }
}

/// A user that looks like ours but cannot be converted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub user: String,
    pub why: String,
}

#[derive(Debug)]
pub struct Conversion {
    /// The whole file, converted.
    pub text: String,
    pub converted: Vec<Converted>,
    pub skipped: Vec<Skipped>,
    /// Users already running broker-shim.
    pub already: Vec<String>,
}

impl Conversion {
    pub fn changed(&self) -> bool {
        !self.converted.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeconfigError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("not a kubeconfig: the top level is not a mapping")]
    NotAKubeconfig,
    #[error("no context named {0:?}")]
    NoSuchContext(String),
}

pub struct ConvertOptions<'a> {
    /// Only the user of this context.
    pub context: Option<&'a str>,
    /// The command kubeconfigs should run: `broker-shim`, or a path to it.
    pub command: &'a str,
    /// The environment the converted users will run in (kubectl's), to name their sessions as
    /// broker-shim will: kubelogin's variables override flags.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The kubeconfig files, as kubectl finds them: `explicit`, else every file of `KUBECONFIG`,
/// else `~/.kube/config`. `None` when there is no home directory to look in.
pub fn kubeconfig_files(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<Vec<PathBuf>> {
    if let Some(path) = explicit {
        return Some(vec![path.to_path_buf()]);
    }
    if let Some(list) = env("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Some(paths);
        }
    }
    let home = directories::BaseDirs::new()?;
    Some(vec![home.home_dir().join(".kube").join("config")])
}

fn text_of(node: &yaml_edit::YamlNode) -> Option<String> {
    node.as_scalar().map(|s| s.as_string())
}

fn get_text(mapping: &Mapping, key: &str) -> Option<String> {
    mapping.get(key).as_ref().and_then(text_of)
}

/// Converts the users of one kubeconfig file's text.
pub fn convert(text: &str, options: &ConvertOptions<'_>) -> Result<Conversion, KubeconfigError> {
    let doc = Document::from_str(text).map_err(|e| KubeconfigError::Yaml(e.to_string()))?;
    let Some(root) = doc.as_mapping() else {
        return if text.trim().is_empty() {
            Ok(Conversion {
                text: text.to_string(),
                converted: Vec::new(),
                skipped: Vec::new(),
                already: Vec::new(),
            })
        } else {
            Err(KubeconfigError::NotAKubeconfig)
        };
    };
    let only_user = match options.context {
        Some(name) => Some(context_user(&root, name)?),
        None => None,
    };
    let mut conversion = Conversion {
        text: String::new(),
        converted: Vec::new(),
        skipped: Vec::new(),
        already: Vec::new(),
    };
    if let Some(users) = root.get_sequence("users") {
        for item in users.values() {
            let Some(entry) = item.as_mapping() else {
                continue;
            };
            let Some(name) = get_text(entry, "name") else {
                continue;
            };
            if only_user.as_ref().is_some_and(|u| *u != name) {
                continue;
            }
            let Some(user) = entry.get_mapping("user") else {
                continue;
            };
            match convert_user(&user, &name, options) {
                Outcome::Converted(c) => conversion.converted.push(*c),
                Outcome::Skipped(why) => conversion.skipped.push(Skipped { user: name, why }),
                Outcome::Already => conversion.already.push(name),
                Outcome::NotOurs => {}
            }
        }
    }
    conversion.text = if conversion.changed() {
        doc.to_string()
    } else {
        text.to_string()
    };
    Ok(conversion)
}

/// The user a context names.
fn context_user(root: &Mapping, context: &str) -> Result<String, KubeconfigError> {
    root.get_sequence("contexts")
        .into_iter()
        .flat_map(|contexts| contexts.values().collect::<Vec<_>>())
        .filter_map(|item| item.as_mapping().cloned())
        .find(|entry| get_text(entry, "name").as_deref() == Some(context))
        .and_then(|entry| entry.get_mapping("context"))
        .and_then(|ctx| get_text(&ctx, "user"))
        .ok_or_else(|| KubeconfigError::NoSuchContext(context.to_string()))
}

enum Outcome {
    Converted(Box<Converted>),
    Skipped(String),
    Already,
    NotOurs,
}

fn convert_user(user: &Mapping, name: &str, options: &ConvertOptions<'_>) -> Outcome {
    if let Some(exec) = user.get_mapping("exec") {
        return convert_exec(&exec, name, options);
    }
    if let Some(provider) = user.get_mapping("auth-provider")
        && get_text(&provider, "name").as_deref() == Some("azure")
    {
        return convert_auth_provider(user, &provider, name, options);
    }
    Outcome::NotOurs
}

/// The session broker-shim will ask for with `options` in the environment it will run in.
fn runtime_spec(
    options: &GetTokenOptions,
    convert: &ConvertOptions<'_>,
) -> Result<SessionSpec, String> {
    let mut at_runtime = options.clone();
    at_runtime.apply_environment(convert.env);
    at_runtime.finish().map(|(spec, _)| spec)
}

fn program_name(command: &str) -> String {
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command);
    base.strip_suffix(".exe").unwrap_or(base).to_string()
}

fn convert_exec(exec: &Mapping, name: &str, convert: &ConvertOptions<'_>) -> Outcome {
    let command = convert.command;
    let Some(program) = get_text(exec, "command") else {
        return Outcome::NotOurs;
    };
    let args: Vec<String> = exec
        .get_sequence("args")
        .map(|seq| seq.values().filter_map(|v| text_of(&v)).collect())
        .unwrap_or_default();
    let program = program_name(&program);
    if program == "broker-shim" || program_name(command) == program {
        return Outcome::Already;
    }
    let (origin, get_token_args) = match (program.as_str(), args.first().map(String::as_str)) {
        ("kubelogin", Some("get-token")) if args.iter().any(|a| a.starts_with("--oidc-")) => {
            (Origin::Int128Kubelogin, &args[1..])
        }
        ("kubelogin", Some("get-token")) => (Origin::AzureKubelogin, &args[1..]),
        ("kubectl", Some("oidc-login")) if args.get(1).map(String::as_str) == Some("get-token") => {
            (Origin::Int128Kubelogin, &args[2..])
        }
        ("kubectl-oidc_login", Some("get-token")) => (Origin::Int128Kubelogin, &args[1..]),
        _ => return Outcome::NotOurs,
    };
    let mut options = match origin {
        Origin::Int128Kubelogin => match int128_options(get_token_args) {
            Ok(options) => options,
            Err(why) => return Outcome::Skipped(why),
        },
        _ => match GetTokenOptions::parse_flags(get_token_args) {
            Ok(options) => options,
            Err(why) => return Outcome::Skipped(why),
        },
    };

    // Secrets kubelogin would read from `env`: out of the file, into the keyring.
    let mut remaining_env = Vec::new();
    let mut env_had_secrets = false;
    if let Some(env) = exec.get_sequence("env") {
        for item in env.values() {
            let Some(entry) = item.as_mapping() else {
                continue;
            };
            let (Some(var), value) = (get_text(entry, "name"), get_text(entry, "value")) else {
                continue;
            };
            let value = value.unwrap_or_default();
            match SECRET_VARIABLES.iter().find(|(n, _)| *n == var) {
                Some((_, field)) => {
                    env_had_secrets = true;
                    let creds = &mut options.credentials;
                    let target = match field {
                        SecretField::ClientSecret => &mut creds.client_secret,
                        SecretField::CertificatePassword => &mut creds.client_certificate_password,
                        SecretField::Password => &mut creds.password,
                    };
                    // kubelogin lets the environment override the flags.
                    *target = value;
                }
                None => remaining_env.push((var, value)),
            }
        }
    }
    let secrets = Credentials {
        client_secret: options.credentials.client_secret.clone(),
        client_certificate_password: options.credentials.client_certificate_password.clone(),
        password: options.credentials.password.clone(),
        ..Credentials::default()
    };
    let spec = match runtime_spec(&options, convert) {
        Ok(spec) => spec,
        Err(why) => return Outcome::Skipped(why),
    };

    exec.set("apiVersion", EXEC_API_VERSION);
    exec.set("command", command);
    exec.set(
        "args",
        options
            .to_args()
            .into_iter()
            .map(YamlValue::from)
            .collect::<Vec<_>>(),
    );
    let env_is_empty = exec
        .get_sequence("env")
        .is_none_or(|_| remaining_env.is_empty());
    if env_is_empty {
        exec.remove("env");
    } else if env_had_secrets {
        exec.set("env", env_value(&remaining_env));
    }
    exec.set("interactiveMode", "IfAvailable");
    exec.set("provideClusterInfo", false);
    exec.set("installHint", INSTALL_HINT);
    // Options (the shim's, now) keep the login mode that was given.
    options.credentials = Credentials::default();
    Outcome::Converted(Box::new(Converted {
        user: name.to_string(),
        origin,
        spec,
        secrets,
        dropped: Vec::new(),
    }))
}

fn env_value(entries: &[(String, String)]) -> Vec<YamlValue> {
    entries
        .iter()
        .map(|(name, value)| {
            let mut map = std::collections::BTreeMap::new();
            map.insert("name".to_string(), YamlValue::from(name.as_str()));
            map.insert("value".to_string(), YamlValue::from(value.as_str()));
            YamlValue::Mapping(map)
        })
        .collect()
}

/// int128/kubelogin's flags, for an Entra ID issuer: the access token asked for is for the
/// client itself (`<client id>/.default`), which such clusters accept when their OIDC audience
/// is the client id.
fn int128_options(args: &[String]) -> Result<GetTokenOptions, String> {
    let mut issuer = None;
    let mut client_id = None;
    let mut login = "interactive";
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .unwrap_or_default()
        };
        match name {
            "--oidc-issuer-url" => issuer = Some(value()),
            "--oidc-client-id" => client_id = Some(value()),
            "--oidc-client-secret" => {
                return Err(
                    "it signs in with a client secret (a confidential client); token-broker signs \
                     users in as a public client"
                        .into(),
                );
            }
            "--grant-type" => {
                login = match value().as_str() {
                    "authcode" | "auto" | "authcode-keyboard" => "interactive",
                    "device-code" => "devicecode",
                    other => return Err(format!("its grant type {other:?} is not supported")),
                }
            }
            _ => {}
        }
    }
    let issuer = issuer.ok_or("it names no --oidc-issuer-url")?;
    let client_id = client_id.ok_or("it names no --oidc-client-id")?;
    let url =
        url::Url::parse(&issuer).map_err(|_| format!("its issuer {issuer:?} is not a URL"))?;
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let [prefix @ .., tenant, "v2.0"] = segments.as_slice() else {
        return Err(format!(
            "its issuer {issuer} is not an Entra ID v2.0 issuer (…/<tenant>/v2.0)"
        ));
    };
    let mut authority = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        authority.push_str(&format!(":{port}"));
    }
    for part in prefix {
        authority.push('/');
        authority.push_str(part);
    }
    let mut options = GetTokenOptions::default();
    options.spec.server_id = client_id.clone();
    options.spec.client_id = client_id;
    options.spec.tenant_id = tenant.to_string();
    match known_environment(&authority) {
        Some(environment) => options.spec.environment = environment.into(),
        None => options.spec.authority_host = format!("{authority}/"),
    }
    options.login = Some(login.into());
    Ok(options)
}

fn known_environment(authority: &str) -> Option<&'static str> {
    match authority {
        "https://login.microsoftonline.com" => Some("AzurePublicCloud"),
        "https://login.microsoftonline.us" => Some("AzureUSGovernmentCloud"),
        "https://login.chinacloudapi.cn" | "https://login.partner.microsoftonline.cn" => {
            Some("AzureChinaCloud")
        }
        _ => None,
    }
}

fn convert_auth_provider(
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

/// A unified diff from `old` to `new`, with every value in `secrets` masked.
pub fn masked_diff(path: &str, old: &str, new: &str, secrets: &[&str]) -> String {
    let mask = |text: &str| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_string(), |t, s| t.replace(s, "<secret>"))
    };
    let (old, new) = (mask(old), mask(new));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .header(path, &format!("{path} (converted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const SHIM: ConvertOptions<'static> = ConvertOptions {
        context: None,
        command: "broker-shim",
        env: &no_env,
    };

    const AZ_AKS: &str = r#"apiVersion: v1
# written by az aks get-credentials
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: https://my-aks.hcp.eastus.azmk8s.io:443
  name: my-aks
contexts:
- context:
    cluster: my-aks
    user: clusterUser_my-rg_my-aks
  name: my-aks
- context:
    cluster: my-aks
    user: static
  name: static
current-context: my-aks
kind: Config
preferences: {}
users:
- name: clusterUser_my-rg_my-aks   # the AKS user
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args:
      - get-token
      - --environment
      - AzurePublicCloud
      - --server-id
      - 6dae42f8-4368-4678-94ff-3960e28e3630
      - --client-id
      - 80faf920-1908-4b52-b5ef-a8e7bedfc67a
      - --tenant-id
      - 00000000-0000-0000-0000-000000000001
      - --login
      - devicecode
      env: null
      installHint: |
        kubelogin is not installed which is required to connect to AAD enabled cluster.
      provideClusterInfo: false
- name: static
  user:
    token: not-ours
"#;

    fn reparse(text: &str) -> Mapping {
        Document::from_str(text).unwrap().as_mapping().unwrap()
    }

    fn exec_of(text: &str, user: &str) -> Mapping {
        let root = reparse(text);
        root.get_sequence("users")
            .unwrap()
            .values()
            .filter_map(|v| v.as_mapping().cloned())
            .find(|u| get_text(u, "name").as_deref() == Some(user))
            .and_then(|u| u.get_mapping("user"))
            .and_then(|u| u.get_mapping("exec"))
            .unwrap()
    }

    fn args_of(exec: &Mapping) -> Vec<String> {
        exec.get_sequence("args")
            .unwrap()
            .values()
            .filter_map(|v| text_of(&v))
            .collect()
    }

    #[test]
    fn converts_what_az_aks_get_credentials_writes_and_keeps_the_rest() {
        let out = convert(AZ_AKS, &SHIM).unwrap();
        assert_eq!(out.converted.len(), 1);
        let c = &out.converted[0];
        assert_eq!(c.user, "clusterUser_my-rg_my-aks");
        assert_eq!(c.origin, Origin::AzureKubelogin);
        assert_eq!(c.spec.server_id, "6dae42f8-4368-4678-94ff-3960e28e3630");
        assert!(!c.has_secrets());
        let exec = exec_of(&out.text, "clusterUser_my-rg_my-aks");
        assert_eq!(get_text(&exec, "command").as_deref(), Some("broker-shim"));
        assert_eq!(
            get_text(&exec, "apiVersion").as_deref(),
            Some(EXEC_API_VERSION)
        );
        assert_eq!(
            get_text(&exec, "interactiveMode").as_deref(),
            Some("IfAvailable")
        );
        assert!(exec.get("env").is_none());
        assert_eq!(
            args_of(&exec).join(" "),
            "get-token --environment AzurePublicCloud --server-id 6dae42f8-4368-4678-94ff-3960e28e3630 \
             --client-id 80faf920-1908-4b52-b5ef-a8e7bedfc67a --tenant-id 00000000-0000-0000-0000-000000000001 \
             --login devicecode"
        );
        // Everything else is untouched, comments and order included.
        assert!(
            out.text
                .starts_with("apiVersion: v1\n# written by az aks get-credentials\nclusters:")
        );
        assert!(
            out.text
                .contains("- name: clusterUser_my-rg_my-aks   # the AKS user")
        );
        assert!(
            out.text
                .contains("- name: static\n  user:\n    token: not-ours\n")
        );
        let before = AZ_AKS.split("users:").next().unwrap();
        assert!(out.text.starts_with(before));
    }

    #[test]
    fn converting_twice_changes_nothing() {
        let once = convert(AZ_AKS, &SHIM).unwrap();
        let twice = convert(&once.text, &SHIM).unwrap();
        assert!(!twice.changed());
        assert_eq!(twice.text, once.text);
        assert_eq!(twice.already, vec!["clusterUser_my-rg_my-aks".to_string()]);
    }

    #[test]
    fn only_the_context_asked_for() {
        let two = AZ_AKS.replace(
            "- name: static\n  user:\n    token: not-ours\n",
            "- name: static\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: /usr/local/bin/kubelogin\n      args: [get-token, --login, devicecode, --server-id, s, --tenant-id, t.example]\n",
        );
        let out = convert(
            &two,
            &ConvertOptions {
                context: Some("static"),
                command: "broker-shim",
                env: &no_env,
            },
        )
        .unwrap();
        assert_eq!(out.converted.len(), 1);
        assert_eq!(out.converted[0].user, "static");
        let untouched = exec_of(&out.text, "clusterUser_my-rg_my-aks");
        assert_eq!(
            get_text(&untouched, "command").as_deref(),
            Some("kubelogin")
        );
        let err = convert(
            &two,
            &ConvertOptions {
                context: Some("nope"),
                command: "broker-shim",
                env: &no_env,
            },
        )
        .unwrap_err();
        assert_eq!(err, KubeconfigError::NoSuchContext("nope".into()));
    }

    #[test]
    fn secrets_in_arguments_and_env_leave_the_file() {
        let text = r#"users:
- name: ci
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: C:\tools\kubelogin.exe
      args: ["get-token", "--login=spn", "--server-id", "s", "--tenant-id", "t.example", "--client-id", "app", "--client-secret", "s3cr3t-in-args"]
      env:
      - name: AZURE_CLIENT_CERTIFICATE_PASSWORD
        value: pfx-pass
      - name: HTTPS_PROXY
        value: http://proxy:3128
"#;
        let out = convert(text, &SHIM).unwrap();
        let c = &out.converted[0];
        assert_eq!(c.secrets.client_secret, "s3cr3t-in-args");
        assert_eq!(c.secrets.client_certificate_password, "pfx-pass");
        assert!(!out.text.contains("s3cr3t-in-args"), "{}", out.text);
        assert!(!out.text.contains("pfx-pass"), "{}", out.text);
        assert!(out.text.contains("HTTPS_PROXY"), "{}", out.text);
        let diff = masked_diff("config", text, &out.text, &c.secret_values());
        assert!(
            !diff.contains("s3cr3t-in-args") && !diff.contains("pfx-pass"),
            "{diff}"
        );
        assert!(diff.contains("<secret>"), "{diff}");
    }

    #[test]
    fn converts_int128_kubelogin_for_an_entra_issuer() {
        let text = r#"users:
- name: oidc
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubectl
      args:
      - oidc-login
      - get-token
      - --oidc-issuer-url=https://login.microsoftonline.com/00000000-0000-0000-0000-000000000002/v2.0
      - --oidc-client-id=12345678-1234-1234-1234-123456789012
      - --oidc-extra-scope=email
      interactiveMode: Never
- name: other-idp
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args: [get-token, --oidc-issuer-url=https://accounts.google.com, --oidc-client-id=x]
"#;
        let out = convert(text, &SHIM).unwrap();
        assert_eq!(out.converted.len(), 1);
        let c = &out.converted[0];
        assert_eq!(c.origin, Origin::Int128Kubelogin);
        assert_eq!(c.spec.tenant_id, "00000000-0000-0000-0000-000000000002");
        assert_eq!(c.spec.server_id, "12345678-1234-1234-1234-123456789012");
        assert_eq!(c.spec.environment, "AzurePublicCloud");
        let exec = exec_of(&out.text, "oidc");
        assert!(args_of(&exec).contains(&"interactive".to_string()));
        assert_eq!(
            get_text(&exec, "interactiveMode").as_deref(),
            Some("IfAvailable")
        );
        assert_eq!(out.skipped.len(), 1);
        assert!(
            out.skipped[0].why.contains("not an Entra ID v2.0 issuer"),
            "{:?}",
            out.skipped
        );
    }

    #[test]
    fn converts_the_legacy_azure_auth_provider_and_drops_its_tokens() {
        let text = r#"users:
- name: legacy
  user:
    auth-provider:
      name: azure
      config:
        apiserver-id: 6dae42f8-4368-4678-94ff-3960e28e3630
        client-id: 80faf920-1908-4b52-b5ef-a8e7bedfc67a
        config-mode: "1"
        environment: AzurePublicCloud
        tenant-id: 00000000-0000-0000-0000-000000000001
        access-token: old-access-token-value
        refresh-token: old-refresh-token-value
        expires-on: "1700000000"
- name: v1
  user:
    auth-provider:
      name: azure
      config:
        apiserver-id: s
        client-id: c
        tenant-id: t
"#;
        let out = convert(text, &SHIM).unwrap();
        assert_eq!(out.converted.len(), 1);
        assert_eq!(out.converted[0].dropped.len(), 2);
        assert!(!out.text.contains("old-refresh-token-value"));
        assert!(!out.text.contains("old-access-token-value"));
        let exec = exec_of(&out.text, "legacy");
        assert_eq!(get_text(&exec, "command").as_deref(), Some("broker-shim"));
        assert!(args_of(&exec).contains(&"devicecode".to_string()));
        assert_eq!(out.skipped[0].user, "v1");
        assert!(out.skipped[0].why.contains("AAD v1"));
    }

    #[test]
    fn unconvertible_kubelogin_users_are_skipped_with_the_reason() {
        let text = "users:\n- name: pop\n  user:\n    exec:\n      command: kubelogin\n      args: [get-token, --server-id, s, --tenant-id, t, --pop-enabled, --pop-claims, u=x]\n";
        let out = convert(text, &SHIM).unwrap();
        assert!(!out.changed());
        assert_eq!(out.text, text);
        assert!(
            out.skipped[0].why.contains("--pop-enabled"),
            "{:?}",
            out.skipped
        );
    }

    #[test]
    fn junk_is_refused_and_an_empty_file_is_fine() {
        assert!(convert("- just\n- a list\n", &SHIM).is_err());
        assert!(!convert("", &SHIM).unwrap().changed());
    }
}
