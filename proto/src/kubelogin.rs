//! kubelogin's environment variables, applied over flags as kubelogin applies them, so that the
//! shim (and brokerctl) are drop-ins: variables that are set override the flags, unless
//! `--disable-environment-override`.

use crate::v1::{Credentials, LoginMode, SessionSpec};

/// Flags that take a value: the long name, and the short one if any.
const VALUE_FLAGS: &[(&str, Option<char>)] = &[
    ("profile", None),
    ("server-id", None),
    ("client-id", None),
    ("tenant-id", Some('t')),
    ("environment", Some('e')),
    ("login", Some('l')),
    ("authority-host", None),
    ("client-secret", None),
    ("client-certificate", None),
    ("client-certificate-password", None),
    ("username", None),
    ("password", None),
    ("identity-resource-id", None),
    ("federated-token-file", None),
    ("timeout", None),
    ("socket", None),
];

/// kubelogin flags that mean nothing here: brokerd keeps the tokens.
const IGNORED_VALUE_FLAGS: &[&str] = &["token-cache-dir", "cache-dir"];
const IGNORED_SWITCHES: &[&str] = &["disable-instance-discovery"];
const SWITCHES: &[&str] = &["disable-environment-override", "use-azurerm-env-vars"];

/// Flags and variables for one `get-token`, before they become a session spec: the login mode
/// is still a name, because `AAD_LOGIN_METHOD` may replace it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetTokenOptions {
    pub spec: SessionSpec,
    pub credentials: Credentials,
    pub login: Option<String>,
    pub use_azurerm_env_vars: bool,
    pub disable_environment_override: bool,
    /// kubelogin's `--timeout`: how long the whole `get-token` may take, login included.
    pub timeout: Option<std::time::Duration>,
    /// broker-shim's own `--socket`: brokerd's socket, over `TOKEN_BROKER_SOCKET`.
    pub socket: Option<String>,
}

impl GetTokenOptions {
    /// Parses kubelogin's `get-token` flags (the arguments after `get-token`). Environment
    /// variables are applied later, by [`Self::apply_environment`].
    pub fn parse_flags(args: &[String]) -> Result<Self, String> {
        let mut options = GetTokenOptions::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = split_flag(arg)?;
            if IGNORED_SWITCHES.contains(&name.as_str()) || SWITCHES.contains(&name.as_str()) {
                let on = inline.as_deref().is_none_or(|v| v != "false");
                match name.as_str() {
                    "disable-environment-override" => options.disable_environment_override = on,
                    "use-azurerm-env-vars" => options.use_azurerm_env_vars = on,
                    _ => {}
                }
                continue;
            }
            let takes_value = VALUE_FLAGS.iter().any(|(long, _)| *long == name);
            if !takes_value && !IGNORED_VALUE_FLAGS.contains(&name.as_str()) {
                return Err(format!("unknown or unsupported flag --{name}"));
            }
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            let (spec, creds) = (&mut options.spec, &mut options.credentials);
            match name.as_str() {
                "profile" => spec.profile = value,
                "server-id" => spec.server_id = value,
                "client-id" => spec.client_id = value,
                "tenant-id" => spec.tenant_id = value,
                "environment" => spec.environment = value,
                "login" => options.login = Some(value),
                "authority-host" => spec.authority_host = value,
                "client-secret" => creds.client_secret = value,
                "client-certificate" => creds.client_certificate_path = value,
                "client-certificate-password" => creds.client_certificate_password = value,
                "username" => spec.username = value,
                "password" => creds.password = value,
                "identity-resource-id" => spec.identity_resource_id = value,
                "federated-token-file" => creds.federated_token_file = value,
                "timeout" => {
                    options.timeout = Some(parse_go_duration(&value).ok_or_else(|| {
                        format!("--timeout {value:?} is not a duration (such as 60s, 5m or 1m30s)")
                    })?)
                }
                "socket" => options.socket = Some(value),
                _ => {}
            }
        }
        Ok(options)
    }

    /// `get-token` and the flags that make these options, in a canonical order. Secrets (a
    /// client secret, passwords) are left out: they belong in the keyring, not in a kubeconfig.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["get-token".to_string()];
        let spec = &self.spec;
        let mut flag = |name: &str, value: &str| {
            if !value.is_empty() {
                args.push(format!("--{name}"));
                args.push(value.to_string());
            }
        };
        flag("environment", &spec.environment);
        flag("server-id", &spec.server_id);
        flag("client-id", &spec.client_id);
        flag("tenant-id", &spec.tenant_id);
        flag("authority-host", &spec.authority_host);
        flag("login", self.login.as_deref().unwrap_or(""));
        flag("username", &spec.username);
        flag("identity-resource-id", &spec.identity_resource_id);
        flag(
            "client-certificate",
            &self.credentials.client_certificate_path,
        );
        flag(
            "federated-token-file",
            &self.credentials.federated_token_file,
        );
        flag("profile", &spec.profile);
        if let Some(timeout) = self.timeout {
            flag("timeout", &format!("{}s", timeout.as_secs().max(1)));
        }
        flag("socket", self.socket.as_deref().unwrap_or(""));
        if self.use_azurerm_env_vars {
            args.push("--use-azurerm-env-vars".into());
        }
        if self.disable_environment_override {
            args.push("--disable-environment-override".into());
        }
        args
    }

    /// Applies kubelogin's variables (its `UpdateFromEnv`), reading them through `env`. A
    /// variable set to an empty value still counts as set, as in kubelogin.
    pub fn apply_environment(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if self.disable_environment_override {
            return;
        }
        let spec = &mut self.spec;
        let creds = &mut self.credentials;
        let set = |target: &mut String, names: &[&str]| {
            // Later names win, as later assignments do in kubelogin.
            for name in names {
                if let Some(value) = env(name) {
                    *target = value;
                }
            }
        };
        if self.use_azurerm_env_vars {
            set(&mut spec.client_id, &["ARM_CLIENT_ID"]);
            set(&mut creds.client_secret, &["ARM_CLIENT_SECRET"]);
            set(
                &mut creds.client_certificate_path,
                &["ARM_CLIENT_CERTIFICATE_PATH"],
            );
            set(
                &mut creds.client_certificate_password,
                &["ARM_CLIENT_CERTIFICATE_PASSWORD"],
            );
            set(&mut spec.tenant_id, &["ARM_TENANT_ID"]);
        } else {
            set(
                &mut spec.client_id,
                &["AAD_SERVICE_PRINCIPAL_CLIENT_ID", "AZURE_CLIENT_ID"],
            );
            set(
                &mut creds.client_secret,
                &["AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", "AZURE_CLIENT_SECRET"],
            );
            set(
                &mut creds.client_certificate_path,
                &[
                    "AAD_SERVICE_PRINCIPAL_CLIENT_CERTIFICATE",
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                ],
            );
            set(
                &mut creds.client_certificate_password,
                &[
                    "AAD_SERVICE_PRINCIPAL_CLIENT_CERTIFICATE_PASSWORD",
                    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
                ],
            );
            set(&mut spec.tenant_id, &["AZURE_TENANT_ID"]);
        }
        set(
            &mut spec.username,
            &["AAD_USER_PRINCIPAL_NAME", "AZURE_USERNAME"],
        );
        set(
            &mut creds.password,
            &["AAD_USER_PRINCIPAL_PASSWORD", "AZURE_PASSWORD"],
        );
        if let Some(method) = env("AAD_LOGIN_METHOD") {
            self.login = Some(method);
        }
        if self.login.as_deref() == Some("workloadidentity") {
            set(&mut spec.client_id, &["AZURE_CLIENT_ID"]);
            set(
                &mut creds.federated_token_file,
                &["AZURE_FEDERATED_TOKEN_FILE"],
            );
            set(&mut spec.authority_host, &["AZURE_AUTHORITY_HOST"]);
        }
        // token-broker's own rule, for every mode: AZURE_AUTHORITY_HOST when no flag names one.
        if spec.authority_host.is_empty()
            && let Some(host) = env("AZURE_AUTHORITY_HOST")
        {
            spec.authority_host = host;
        }
    }

    /// The request these options make (call after [`Self::apply_environment`]): the login mode
    /// checked, the required flags present, file paths made absolute (brokerd has another
    /// working directory).
    pub fn finish(self) -> Result<(SessionSpec, Credentials), String> {
        let GetTokenOptions {
            mut spec,
            mut credentials,
            login,
            ..
        } = self;
        let mode = match login.as_deref() {
            None | Some("") => LoginMode::Unspecified,
            Some(name) => crate::parse_login_mode(name).ok_or_else(|| {
                format!(
                    "--login {name:?} is not supported; use one of {}",
                    crate::login_mode_names()
                )
            })?,
        };
        spec.set_login_mode(mode);
        if spec.profile.is_empty() {
            if spec.server_id.is_empty() {
                return Err("--server-id is required (or --profile)".into());
            }
            let tenant_optional = matches!(
                mode,
                LoginMode::ManagedIdentity | LoginMode::AzureCli | LoginMode::AzureDeveloperCli
            );
            if spec.tenant_id.is_empty() && !tenant_optional {
                return Err("--tenant-id is required (or --profile)".into());
            }
        }
        if !spec.tenant_id.is_empty() {
            check_tenant(spec.tenant_id.trim())
                .map_err(|why| format!("--tenant-id {:?} is not valid: {why}", spec.tenant_id))?;
        }
        for path in [
            &mut credentials.client_certificate_path,
            &mut credentials.federated_token_file,
        ] {
            if !path.is_empty() {
                let absolute = std::path::absolute(&*path)
                    .map_err(|e| format!("cannot resolve the path {path:?}: {e}"))?;
                *path = absolute
                    .to_str()
                    .ok_or_else(|| format!("the path {absolute:?} is not UTF-8"))?
                    .to_string();
            }
        }
        Ok((spec, credentials))
    }
}

/// A Go `time.Duration` as pflag parses it: numbers (decimals allowed) each with a unit (`ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`), such as `60s`, `1m30s` or `1.5h`. `None` for anything
/// else, and for a duration of zero or one too large to mean anything.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    // A week is longer than any login; beyond it a value is a mistake.
    (total > 0.0 && total <= 7.0 * 86_400.0).then(|| std::time::Duration::from_secs_f64(total))
}

/// Whether `tenant` can name an Entra tenant: a GUID, a domain name (`contoso.onmicrosoft.com`),
/// or one of the multi-tenant names (`common`, `organizations`, `consumers`). Anything else is
/// refused before a request is made, with the reason.
pub fn check_tenant(tenant: &str) -> Result<(), &'static str> {
    if matches!(tenant, "common" | "organizations" | "consumers") || is_guid(tenant) {
        return Ok(());
    }
    let labels: Vec<&str> = tenant.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if tenant.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok) {
        return Ok(());
    }
    Err(
        "a tenant is a GUID, a domain name (contoso.onmicrosoft.com), or common, organizations or consumers",
    )
}

fn is_guid(value: &str) -> bool {
    value.len() == 36
        && value.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `--name value`, `--name=value`, `-x value`, `-x=value` and `-xvalue`, as pflag allows.
/// Returns the long name and the inline value, if any.
fn split_flag(arg: &str) -> Result<(String, Option<String>), String> {
    if let Some(long) = arg.strip_prefix("--") {
        return Ok(match long.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (long.to_string(), None),
        });
    }
    if let Some(short) = arg.strip_prefix('-') {
        let mut chars = short.chars();
        if let Some(letter) = chars.next() {
            let long = VALUE_FLAGS
                .iter()
                .find(|(_, s)| *s == Some(letter))
                .map(|(long, _)| long.to_string())
                .ok_or_else(|| format!("unknown flag -{letter}"))?;
            let rest = chars.as_str();
            let inline = rest.strip_prefix('=').unwrap_or(rest);
            return Ok((long, (!inline.is_empty()).then(|| inline.to_string())));
        }
    }
    Err(format!("unexpected argument {arg:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn options(client: &str, login: &str) -> GetTokenOptions {
        GetTokenOptions {
            spec: SessionSpec {
                client_id: client.into(),
                tenant_id: "flag-tenant".into(),
                ..SessionSpec::default()
            },
            login: Some(login.into()),
            ..GetTokenOptions::default()
        }
    }

    #[test]
    fn variables_override_flags_azure_names_last() {
        let mut o = options("flag-client", "spn");
        o.apply_environment(&env(&[
            ("AAD_SERVICE_PRINCIPAL_CLIENT_ID", "aad-client"),
            ("AZURE_CLIENT_ID", "azure-client"),
            ("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", "aad-secret"),
            ("AZURE_TENANT_ID", "env-tenant"),
        ]));
        assert_eq!(o.spec.client_id, "azure-client");
        assert_eq!(o.credentials.client_secret, "aad-secret");
        assert_eq!(o.spec.tenant_id, "env-tenant");
    }

    #[test]
    fn disable_environment_override_keeps_the_flags() {
        let mut o = options("flag-client", "spn");
        o.disable_environment_override = true;
        o.apply_environment(&env(&[
            ("AZURE_CLIENT_ID", "x"),
            ("AZURE_AUTHORITY_HOST", "h"),
        ]));
        assert_eq!(o.spec.client_id, "flag-client");
        assert_eq!(o.spec.authority_host, "");
    }

    #[test]
    fn azurerm_names_replace_the_azure_ones() {
        let mut o = options("flag-client", "spn");
        o.use_azurerm_env_vars = true;
        o.apply_environment(&env(&[
            ("AZURE_CLIENT_ID", "ignored"),
            ("ARM_CLIENT_ID", "arm-client"),
            ("ARM_CLIENT_SECRET", "arm-secret"),
        ]));
        assert_eq!(o.spec.client_id, "arm-client");
        assert_eq!(o.credentials.client_secret, "arm-secret");
    }

    #[test]
    fn workload_identity_takes_its_file_and_authority_and_the_login_may_come_from_env() {
        let mut o = options("flag-client", "devicecode");
        o.spec.authority_host = "https://flag/".into();
        o.apply_environment(&env(&[
            ("AAD_LOGIN_METHOD", "workloadidentity"),
            ("AZURE_CLIENT_ID", "wi-client"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token"),
            ("AZURE_AUTHORITY_HOST", "https://env/"),
        ]));
        assert_eq!(o.login.as_deref(), Some("workloadidentity"));
        assert_eq!(o.spec.client_id, "wi-client");
        assert_eq!(o.credentials.federated_token_file, "/var/run/secrets/token");
        assert_eq!(o.spec.authority_host, "https://env/");
    }

    #[test]
    fn the_authority_host_variable_fills_in_only_when_no_flag_names_one() {
        let mut o = options("c", "devicecode");
        o.spec.authority_host = "https://flag/".into();
        o.apply_environment(&env(&[("AZURE_AUTHORITY_HOST", "https://env/")]));
        assert_eq!(o.spec.authority_host, "https://flag/");
        let mut o = options("c", "devicecode");
        o.apply_environment(&env(&[("AZURE_AUTHORITY_HOST", "https://env/")]));
        assert_eq!(o.spec.authority_host, "https://env/");
    }

    #[test]
    fn go_durations_parse_as_pflag_reads_them() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "60", "5 minutes", "0s", "-1s", "1y", "1000h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn tenants_are_guids_domains_or_the_multi_tenant_names() {
        for good in [
            "00000000-0000-0000-0000-000000000001",
            "contoso.onmicrosoft.com",
            "contoso.example",
            "organizations",
            "common",
            "consumers",
        ] {
            assert_eq!(check_tenant(good), Ok(()), "{good}");
        }
        for bad in [
            "contoso",
            "a/b",
            "x..y",
            "-a.b",
            "my tenant.com",
            "t",
            "a.b/../c",
        ] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ropc_user_and_password() {
        let mut o = options("c", "ropc");
        o.apply_environment(&env(&[
            ("AAD_USER_PRINCIPAL_NAME", "a@x"),
            ("AZURE_USERNAME", "b@x"),
            ("AZURE_PASSWORD", "pw"),
        ]));
        assert_eq!(o.spec.username, "b@x");
        assert_eq!(o.credentials.password, "pw");
    }
}
