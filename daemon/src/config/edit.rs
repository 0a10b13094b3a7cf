//! Writing a profile into the configuration file, for `brokerctl login --profile NAME`.
//!
//! The file is edited, not regenerated (toml_edit keeps comments, order and formatting), the
//! result must pass the same checks brokerd applies when it loads it, and it replaces the old
//! file in one rename, so brokerd's reloader never sees half a file.

use std::io::Write;
use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, value};

use super::{Config, ConfigError, Profile};

/// Sets `[profiles.<name>]` to `profile` in the file at `path` (created if missing). Returns
/// false when the file already said exactly that, and nothing was written.
pub fn save_profile(path: &Path, name: &str, profile: &Profile) -> Result<bool, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(invalid(format!("{name:?} is not a usable profile name")));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    // A file brokerd refuses is not made worse: the user fixes it first.
    let current = Config::parse(&old).map_err(&invalid)?;
    if current.profiles.get(name) == Some(profile) {
        return Ok(false);
    }
    let mut doc: DocumentMut = old.parse().map_err(|e: toml_edit::TomlError| {
        invalid(e.to_string().lines().next().unwrap_or_default().to_string())
    })?;
    let profiles = doc
        .entry("profiles")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_mut()
        .ok_or_else(|| invalid("`profiles` is not a table".into()))?;
    profiles.insert(name, Item::Table(profile_table(profile)));
    let new = doc.to_string();
    Config::parse(&new).map_err(|reason| invalid(format!("the new profile {name}: {reason}")))?;
    write_atomically(path, &new).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: format!("cannot write it: {e}"),
    })?;
    Ok(true)
}

fn profile_table(profile: &Profile) -> Table {
    let mut table = Table::new();
    let fields = [
        ("server_id", profile.server_id.as_str()),
        ("tenant_id", profile.tenant_id.as_str()),
        ("client_id", profile.client_id.as_str()),
        ("environment", profile.environment.as_str()),
        ("authority_host", profile.authority_host.as_str()),
        ("login", profile.login.as_deref().unwrap_or_default()),
        ("username", profile.username.as_str()),
        (
            "identity_resource_id",
            profile.identity_resource_id.as_str(),
        ),
        ("login_hint", profile.login_hint.as_str()),
        ("redirect_url", profile.redirect_url.as_str()),
        ("subscription", profile.subscription.as_str()),
        (
            "service_connection_id",
            profile.service_connection_id.as_str(),
        ),
        ("pop_claims", profile.pop_claims.as_str()),
        ("oidc_issuer_url", profile.oidc_issuer_url.as_str()),
    ];
    for (key, text) in fields {
        if !text.is_empty() {
            table.insert(key, value(text));
        }
    }
    for (key, list) in [
        ("oidc_extra_scopes", &profile.oidc_extra_scopes),
        ("oidc_auth_params", &profile.oidc_auth_params),
    ] {
        if !list.is_empty() {
            table.insert(key, value(list.iter().collect::<toml_edit::Array>()));
        }
    }
    if profile.oidc_use_access_token {
        table.insert("oidc_use_access_token", value(true));
    }
    if profile.allow_forwarding {
        table.insert("allow_forwarding", value(true));
    }
    table
}

/// Same directory, so the rename is atomic; the old file's permissions are kept.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(file.path(), meta.permissions())?;
    }
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod() -> Profile {
        Profile {
            server_id: "6dae42f8-4368-4678-94ff-3960e28e3630".into(),
            tenant_id: "contoso.example".into(),
            client_id: String::new(),
            environment: String::new(),
            authority_host: String::new(),
            login: Some("interactive".into()),
            username: String::new(),
            identity_resource_id: String::new(),
            allow_forwarding: false,
            ..Profile::default()
        }
    }

    #[test]
    fn adds_a_profile_and_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let before = "# my settings\nlog_level = \"debug\"  # chatty\n\n[refresh]\njitter = 0.2\n";
        std::fs::write(&path, before).unwrap();
        assert!(save_profile(&path, "prod", &prod()).unwrap());
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(before), "{after}");
        assert!(after.contains("[profiles.prod]\n"), "{after}");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.profiles["prod"], prod());
        assert_eq!(config.log_level.as_deref(), Some("debug"));
        // Saving the same again writes nothing.
        assert!(!save_profile(&path, "prod", &prod()).unwrap());
    }

    #[test]
    fn creates_the_file_and_replaces_a_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-broker/config.toml");
        save_profile(&path, "prod", &prod()).unwrap();
        let mut changed = prod();
        changed.login = None;
        changed.tenant_id = "fabrikam.example".into();
        save_profile(&path, "prod", &changed).unwrap();
        assert_eq!(Config::load(&path).unwrap().profiles["prod"], changed);
    }

    #[test]
    fn an_openid_connect_profile_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let keycloak = Profile {
            client_id: "kubernetes".into(),
            login: Some("devicecode".into()),
            oidc_issuer_url: "https://sso.example/realms/dev".into(),
            oidc_extra_scopes: vec!["email".into(), "groups".into()],
            oidc_auth_params: vec!["prompt=consent".into()],
            oidc_use_access_token: true,
            ..Profile::default()
        };
        save_profile(&path, "keycloak", &keycloak).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#"oidc_extra_scopes = ["email", "groups"]"#),
            "{text}"
        );
        assert_eq!(Config::load(&path).unwrap().profiles["keycloak"], keycloak);
    }

    #[test]
    fn refuses_what_brokerd_would_refuse_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut bad = prod();
        bad.environment = "AzureMoonCloud".into();
        let err = save_profile(&path, "prod", &bad).unwrap_err().to_string();
        assert!(err.contains("AzureMoonCloud"), "{err}");
        assert!(!path.exists());

        std::fs::write(&path, "log_level = [\n").unwrap();
        assert!(save_profile(&path, "prod", &prod()).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "log_level = [\n");
    }
}
