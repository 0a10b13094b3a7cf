//! Which kubeconfig contexts run broker-shim, and with what flags: for `brokerctl status`,
//! which shows each context's session and whether it is signed in.

use std::str::FromStr;

use broker_proto::kubelogin::GetTokenOptions;
use yaml_edit::Document;

use super::KubeconfigError;
use super::azure::program_name;
use super::tree::{get_text, text_of};

/// A context whose user runs broker-shim.
#[derive(Debug)]
pub struct ShimContext {
    pub context: String,
    pub user: String,
    /// The user's `get-token` flags, or why they do not parse.
    pub options: Result<GetTokenOptions, String>,
}

/// The contexts of one kubeconfig file's text whose users run broker-shim, in file order.
pub fn shim_contexts(text: &str) -> Result<Vec<ShimContext>, KubeconfigError> {
    let doc = Document::from_str(text).map_err(|e| KubeconfigError::Yaml(e.to_string()))?;
    let Some(root) = doc.as_mapping() else {
        return Ok(Vec::new());
    };
    let mut shim_users = Vec::new();
    for item in root.get_sequence("users").iter().flat_map(|s| s.values()) {
        let Some(entry) = item.as_mapping() else {
            continue;
        };
        let (Some(name), Some(exec)) = (
            get_text(entry, "name"),
            entry
                .get_mapping("user")
                .and_then(|u| u.get_mapping("exec")),
        ) else {
            continue;
        };
        if get_text(&exec, "command").is_none_or(|c| program_name(&c) != "broker-shim") {
            continue;
        }
        let args: Vec<String> = exec
            .get_sequence("args")
            .map(|seq| seq.values().filter_map(|v| text_of(&v)).collect())
            .unwrap_or_default();
        let options = match args.split_first() {
            Some((first, rest)) if first == "get-token" => GetTokenOptions::parse_flags(rest),
            _ => Err("its arguments do not start with get-token".into()),
        };
        shim_users.push((name, options));
    }
    let mut contexts = Vec::new();
    for item in root
        .get_sequence("contexts")
        .iter()
        .flat_map(|s| s.values())
    {
        let Some(entry) = item.as_mapping() else {
            continue;
        };
        let (Some(context), Some(user)) = (
            get_text(entry, "name"),
            entry
                .get_mapping("context")
                .and_then(|c| get_text(&c, "user")),
        ) else {
            continue;
        };
        if let Some((_, options)) = shim_users.iter().find(|(name, _)| *name == user) {
            contexts.push(ShimContext {
                context,
                user,
                options: options.clone(),
            });
        }
    }
    Ok(contexts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_contexts_whose_users_run_the_shim() {
        let text = r#"users:
- name: aks
  user:
    exec:
      command: /usr/local/bin/broker-shim
      args: [get-token, --server-id, s, --tenant-id, t.example]
- name: other
  user:
    token: x
- name: broken
  user:
    exec:
      command: broker-shim
      args: [get-token, --bogus]
contexts:
- name: prod
  context: {cluster: c, user: aks}
- name: static
  context: {cluster: c, user: other}
- name: odd
  context: {cluster: c, user: broken}
"#;
        let found = shim_contexts(text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].context, "prod");
        assert_eq!(
            found[0].options.as_ref().unwrap().spec.tenant_id,
            "t.example"
        );
        assert!(found[1].options.is_err());
    }
}
