//! Converting kubeconfig users to broker-shim: those whose exec command is a kubelogin (Azure's
//! `kubelogin get-token`, or int128's `kubectl oidc-login get-token`) and those with the legacy
//! `azure` auth-provider.
//!
//! The YAML is edited in place (yaml-edit keeps a lossless syntax tree), so every other user,
//! cluster and context, every other key, the comments and the key order stay as they were. Only
//! the converted users' `exec` (or `auth-provider`) changes. Secrets found in them (a client
//! secret or password passed as an argument or in `env`, a legacy refresh token) leave the file:
//! the caller moves the ones worth keeping into the keyring.

mod azure;
mod contexts;
mod files;
mod int128;
mod legacy;
mod secrets;
mod tree;

use std::fmt;
use std::str::FromStr;

use broker_proto::v1::{Credentials, SessionSpec};
use yaml_edit::{Document, Mapping};

pub use azure::SecretField;
pub use contexts::{ShimContext, shim_contexts};
pub use files::kubeconfig_files;
pub use secrets::{backup_text, keyring_key, masked_diff, placeholders, restore, secret_spans};
use tree::get_text;

const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";
const INSTALL_HINT: &str = "broker-shim is part of token-broker: see its README to install it.\n";

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

pub(super) enum Outcome {
    Converted(Box<Converted>),
    Skipped(String),
    Already,
    NotOurs,
}

pub(super) fn convert_user(user: &Mapping, name: &str, options: &ConvertOptions<'_>) -> Outcome {
    if let Some(exec) = user.get_mapping("exec") {
        return azure::convert_exec(&exec, name, options);
    }
    if let Some(provider) = user.get_mapping("auth-provider")
        && get_text(&provider, "name").as_deref() == Some("azure")
    {
        return legacy::convert_auth_provider(user, &provider, name, options);
    }
    Outcome::NotOurs
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::text_of;

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
        assert_eq!(out.converted.len(), 2);
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
        // Any other issuer keeps int128's flags, read by broker-shim.
        let google = &out.converted[1];
        assert_eq!(google.spec.oidc_issuer_url, "https://accounts.google.com");
        assert_eq!(
            args_of(&exec_of(&out.text, "other-idp")),
            [
                "get-token",
                "--oidc-issuer-url=https://accounts.google.com",
                "--oidc-client-id=x",
                "--grant-type=authcode"
            ]
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
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
        let text = "users:\n- name: pop\n  user:\n    exec:\n      command: kubelogin\n      args: [get-token, --server-id, s, --tenant-id, t.example, --login, devicecode, --legacy]\n";
        let out = convert(text, &SHIM).unwrap();
        assert!(!out.changed());
        assert_eq!(out.text, text);
        assert!(out.skipped[0].why.contains("--legacy"), "{:?}", out.skipped);
    }

    #[test]
    fn junk_is_refused_and_an_empty_file_is_fine() {
        assert!(convert("- just\n- a list\n", &SHIM).is_err());
        assert!(!convert("", &SHIM).unwrap().changed());
    }
}
