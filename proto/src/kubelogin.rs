//! kubelogin's environment variables, applied over flags as kubelogin applies them, so that the
//! shim (and brokerctl) are drop-ins: variables that are set override the flags, unless
//! `--disable-environment-override`.

use crate::v1::{Credentials, LoginMode, SessionSpec};

/// How a flag is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Takes a value.
    Value,
    /// A boolean: `--name`, `--name=true`, `--name=false`.
    Switch,
}

/// Every flag of Azure kubelogin v0.2.19's `get-token` (its `Options.AddFlags`, and klog's
/// `-v` and `--logtostderr` that its `main` adds), plus token-broker's `--profile` and
/// `--socket`: the long name, the short one pflag also accepts, and how it is read. Flags that
/// mean nothing here (kubelogin's cache directories, instance discovery, klog's) are read and
/// then dropped by [`GetTokenOptions::parse_flags`].
const FLAGS: &FlagTable = &[
    ("login", Some('l'), Kind::Value),
    ("client-id", None, Kind::Value),
    ("client-secret", None, Kind::Value),
    ("client-certificate", None, Kind::Value),
    ("client-certificate-password", None, Kind::Value),
    ("username", None, Kind::Value),
    ("password", None, Kind::Value),
    ("identity-resource-id", None, Kind::Value),
    ("server-id", None, Kind::Value),
    ("federated-token-file", None, Kind::Value),
    ("authority-host", None, Kind::Value),
    ("azure-pipelines-service-connection-id", None, Kind::Value),
    ("token-cache-dir", None, Kind::Value),
    ("cache-dir", None, Kind::Value),
    ("tenant-id", Some('t'), Kind::Value),
    ("subscription", Some('s'), Kind::Value),
    ("environment", Some('e'), Kind::Value),
    ("legacy", None, Kind::Switch),
    ("use-azurerm-env-vars", None, Kind::Switch),
    ("pop-enabled", None, Kind::Switch),
    ("timeout", None, Kind::Value),
    ("pop-claims", None, Kind::Value),
    ("disable-environment-override", None, Kind::Switch),
    ("disable-instance-discovery", None, Kind::Switch),
    ("redirect-url", None, Kind::Value),
    ("login-hint", None, Kind::Value),
    ("v", Some('v'), Kind::Value),
    ("logtostderr", None, Kind::Switch),
    ("profile", None, Kind::Value),
    ("socket", None, Kind::Value),
];

/// A table of flags: the long name, the short one pflag also accepts, and how it is read.
pub(crate) type FlagTable = [(&'static str, Option<char>, Kind)];

/// One flag as read: a switch's state, or a value.
pub(crate) enum Flag {
    Switch(bool),
    Value(String),
}

/// Whether `name` is one of Azure kubelogin's flags.
pub(crate) fn is_azure_flag(name: &str) -> bool {
    flag_kind(name).is_some()
}

fn flag_kind(name: &str) -> Option<Kind> {
    FLAGS
        .iter()
        .find(|(long, _, _)| *long == name)
        .map(|(_, _, kind)| *kind)
}

/// Reads `args` as pflag reads them against `table`, handing each flag to `each` by its long
/// name. A flag not in the table is an error.
pub(crate) fn read_flags(
    table: &FlagTable,
    args: &[String],
    mut each: impl FnMut(&str, Flag) -> Result<(), String>,
) -> Result<(), String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = split_flag(table, arg)?;
        let kind = table
            .iter()
            .find(|(long, _, _)| *long == name)
            .map(|(_, _, kind)| *kind)
            .ok_or_else(|| format!("unknown or unsupported flag --{name}"))?;
        let flag = match kind {
            Kind::Switch => Flag::Switch(match inline.as_deref() {
                None => true,
                Some(value) => parse_bool(value)
                    .ok_or_else(|| format!("--{name}={value:?}: expected true or false"))?,
            }),
            Kind::Value => Flag::Value(match inline {
                Some(value) => value,
                None => args
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            }),
        };
        each(&name, flag)?;
    }
    Ok(())
}

/// Flags and variables for one `get-token`, before they become a session spec: the login mode
/// is still a name, because `AAD_LOGIN_METHOD` may replace it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetTokenOptions {
    pub spec: SessionSpec,
    pub credentials: Credentials,
    pub login: Option<String>,
    pub use_azurerm_env_vars: bool,
    pub disable_environment_override: bool,
    /// `--pop-enabled`: must come with `--pop-claims`, as kubelogin requires.
    pub pop_enabled: bool,
    /// kubelogin's `--timeout`: how long the whole `get-token` may take, login included.
    pub timeout: Option<std::time::Duration>,
    /// broker-shim's own `--socket`: brokerd's socket, over `TOKEN_BROKER_SOCKET`.
    pub socket: Option<String>,
    /// How broker-shim opens a sign-in page at a terminal (int128's flags).
    pub browser: Browser,
    /// int128's `--certificate-authority` files and `--certificate-authority-data` values, as
    /// given; [`Self::finish`] reads them into the spec's PEM.
    pub ca_files: Vec<String>,
    pub ca_data: Vec<String>,
}

/// How broker-shim opens the sign-in page when it runs a browser login at a terminal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Browser {
    /// `$BROWSER`, else the desktop's opener.
    #[default]
    Default,
    /// int128's `--skip-open-browser`: the URL is printed, nothing is opened.
    Skip,
    /// int128's `--browser-command`: this program, given the URL as its argument.
    Command(String),
}

impl GetTokenOptions {
    /// Parses kubelogin's `get-token` flags (the arguments after `get-token`). Environment
    /// variables are applied later, by [`Self::apply_environment`].
    pub fn parse_flags(args: &[String]) -> Result<Self, String> {
        if crate::oidc_login::names_an_issuer(args) {
            return crate::oidc_login::parse_flags(args);
        }
        let mut options = GetTokenOptions::default();
        read_flags(FLAGS, args, |name, value| {
            let (spec, creds) = (&mut options.spec, &mut options.credentials);
            let value = match value {
                Flag::Switch(on) => {
                    match name {
                        "disable-environment-override" => options.disable_environment_override = on,
                        "use-azurerm-env-vars" => options.use_azurerm_env_vars = on,
                        "legacy" => spec.legacy = on,
                        "pop-enabled" => options.pop_enabled = on,
                        _ => {}
                    }
                    return Ok(());
                }
                Flag::Value(value) => value,
            };
            match name {
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
                "login-hint" => spec.login_hint = value,
                "redirect-url" => spec.redirect_url = value,
                "subscription" => spec.subscription = value,
                "pop-claims" => spec.pop_claims = value,
                "azure-pipelines-service-connection-id" => spec.service_connection_id = value,
                "timeout" => {
                    options.timeout = Some(parse_go_duration(&value).ok_or_else(|| {
                        format!("--timeout {value:?} is not a duration (such as 60s, 5m or 1m30s)")
                    })?)
                }
                "socket" => options.socket = Some(value),
                _ => {}
            }
            Ok(())
        })?;
        Ok(options)
    }

    /// `get-token` and the flags that make these options, in a canonical order. Secrets (a
    /// client secret, passwords) are left out: they belong in the keyring, not in a kubeconfig.
    pub fn to_args(&self) -> Vec<String> {
        if !self.spec.oidc_issuer_url.is_empty() {
            return crate::oidc_login::to_args(self);
        }
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
        for (name, value) in crate::account_flags(spec) {
            flag(name, value);
        }
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
        if !spec.pop_claims.is_empty() {
            args.push("--pop-enabled".into());
        }
        if spec.legacy {
            args.push("--legacy".into());
        }
        if self.disable_environment_override {
            args.push("--disable-environment-override".into());
        }
        args
    }

    /// Applies kubelogin's variables (its `UpdateFromEnv`), reading them through `env`. A
    /// variable set to an empty value still counts as set, as in kubelogin.
    pub fn apply_environment(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        // What the tools kubelogin runs read for themselves, whatever the override switch:
        // the Azure CLI its configuration directory, Azure Pipelines' and GitHub Actions'
        // credentials the job's token and OIDC endpoint. (KUBECACHEDIR, kubelogin's cache, means nothing here.)
        if let Some(dir) = env("AZURE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            self.spec.azure_config_dir = dir;
        }
        if let Some(token) = env("SYSTEM_ACCESSTOKEN") {
            self.credentials.system_access_token = token;
        }
        if let Some(uri) = env("SYSTEM_OIDCREQUESTURI") {
            self.credentials.oidc_request_uri = uri;
        }
        if let Some(url) = env("ACTIONS_ID_TOKEN_REQUEST_URL") {
            self.credentials.actions_id_token_request_url = url;
        }
        if let Some(token) = env("ACTIONS_ID_TOKEN_REQUEST_TOKEN") {
            self.credentials.actions_id_token_request_token = token;
        }
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
        if self.login.as_deref() == Some("azurepipelines") {
            let fill = |target: &mut String, name: &str| {
                if target.is_empty()
                    && let Some(value) = env(name)
                {
                    *target = value;
                }
            };
            fill(&mut spec.client_id, "AZURESUBSCRIPTION_CLIENT_ID");
            fill(&mut spec.tenant_id, "AZURESUBSCRIPTION_TENANT_ID");
            fill(
                &mut spec.service_connection_id,
                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
            );
        }
        // As kubelogin: a variable that does not parse leaves the flag's timeout.
        if let Some(timeout) = env("AZURE_CLI_TIMEOUT").and_then(|t| parse_go_duration(&t)) {
            self.timeout = Some(timeout);
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
            pop_enabled,
            ca_files,
            ca_data,
            ..
        } = self;
        // kubelogin's rule: the two PoP flags come together.
        match (pop_enabled, spec.pop_claims.trim().is_empty()) {
            (true, true) => {
                return Err(
                    "--pop-enabled needs --pop-claims with at least u=<the cluster's ARM \
                            id>"
                    .into(),
                );
            }
            (false, false) => return Err("--pop-claims needs --pop-enabled".into()),
            (true, false) => {
                spec.pop_claims = canonical_pop_claims(&spec.pop_claims)
                    .map_err(|why| format!("--pop-claims is not valid: {why}"))?;
            }
            (false, true) => spec.pop_claims.clear(),
        }
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
        // What the environment holds for one mode (every step of a pipeline has the job's
        // token; many shells set AZURE_CONFIG_DIR) goes only to that mode, or to a profile,
        // which decides the mode in brokerd.
        let for_mode = |wanted| mode == wanted || mode == LoginMode::Unspecified;
        if !for_mode(LoginMode::AzurePipelines) {
            credentials.system_access_token.clear();
            credentials.oidc_request_uri.clear();
        }
        if !for_mode(LoginMode::AzureCli) {
            spec.azure_config_dir.clear();
        }
        if !for_mode(LoginMode::WorkloadIdentity) {
            credentials.actions_id_token_request_url.clear();
            credentials.actions_id_token_request_token.clear();
        }
        spec.oidc_certificate_authority = read_certificate_authorities(&ca_files, &ca_data)?;
        if spec.profile.is_empty() && spec.oidc_issuer_url.is_empty() {
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
            &mut spec.azure_config_dir,
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

/// How much PEM `--certificate-authority[-data]` may add up to: it travels with every request,
/// and an issuer's own CA chain is a few KiB.
pub const MAX_CERTIFICATE_AUTHORITY: usize = 32 * 1024;

/// The PEM text of int128's `--certificate-authority` files (made absolute) and
/// `--certificate-authority-data` values (base64 of PEM), one after the other.
fn read_certificate_authorities(files: &[String], data: &[String]) -> Result<String, String> {
    use base64::Engine;
    const LIMIT: u64 = MAX_CERTIFICATE_AUTHORITY as u64;
    let mut pem = String::new();
    for file in files {
        let path = std::path::absolute(file)
            .map_err(|e| format!("--certificate-authority {file:?}: {e}"))?;
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("--certificate-authority {}: {e}", path.display()))?
            .len();
        if size > LIMIT {
            return Err(format!(
                "--certificate-authority {}: larger than 32 KiB (name the issuer's own CA, not a \
                 whole bundle)",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("--certificate-authority {}: {e}", path.display()))?;
        pem.push_str(&text);
        pem.push('\n');
    }
    for value in data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| "--certificate-authority-data is not base64".to_string())?;
        let text = String::from_utf8(bytes)
            .map_err(|_| "--certificate-authority-data is not base64 of PEM text".to_string())?;
        pem.push_str(&text);
        pem.push('\n');
    }
    if pem.len() > MAX_CERTIFICATE_AUTHORITY {
        return Err("--certificate-authority[-data] add up to more than 32 KiB".into());
    }
    if !pem.is_empty() && !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("--certificate-authority[-data] holds no PEM certificate".into());
    }
    Ok(pem)
}

/// `--pop-claims` (`u=<ARM id>,key=value,…`) checked as kubelogin checks it, the `u` claim
/// required, and written back in one spelling (keys sorted, spaces trimmed), so that every
/// spelling of the same claims names one session.
pub fn canonical_pop_claims(text: &str) -> Result<String, &'static str> {
    let mut claims = std::collections::BTreeMap::new();
    for pair in text.split(',') {
        let (key, value) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or("each claim is key=value, such as u=<the cluster's ARM id>")?;
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("a claim's name is letters, digits and _");
        }
        if value.chars().any(|c| c.is_control()) || value.len() > 1024 {
            return Err("a claim's value is one line of at most 1,024 characters");
        }
        claims.insert(key.to_string(), value.to_string());
    }
    if !claims.contains_key("u") {
        return Err("the u claim (the cluster's ARM id, u=<ARM id>) is required");
    }
    Ok(claims
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(","))
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

/// A boolean as Go's `strconv.ParseBool` (and so pflag) reads it.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `--name value`, `--name=value`, `-x value`, `-x=value` and `-xvalue`, as pflag allows.
/// Returns the long name and the inline value, if any.
fn split_flag(table: &FlagTable, arg: &str) -> Result<(String, Option<String>), String> {
    if let Some(long) = arg.strip_prefix("--") {
        return Ok(match long.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (long.to_string(), None),
        });
    }
    if let Some(short) = arg.strip_prefix('-') {
        let mut chars = short.chars();
        if let Some(letter) = chars.next() {
            let long = table
                .iter()
                .find(|(_, s, _)| *s == Some(letter))
                .map(|(long, _, _)| long.to_string())
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

    /// Azure kubelogin v0.2.19's `get-token` flags, from its `Options.AddFlags` (and klog's,
    /// which its `main` adds): the list that drop-in means.
    const KUBELOGIN_V0_2_19: &[&str] = &[
        "login",
        "client-id",
        "client-secret",
        "client-certificate",
        "client-certificate-password",
        "username",
        "password",
        "identity-resource-id",
        "server-id",
        "federated-token-file",
        "authority-host",
        "azure-pipelines-service-connection-id",
        "token-cache-dir",
        "cache-dir",
        "tenant-id",
        "subscription",
        "environment",
        "legacy",
        "use-azurerm-env-vars",
        "pop-enabled",
        "timeout",
        "pop-claims",
        "disable-environment-override",
        "disable-instance-discovery",
        "redirect-url",
        "login-hint",
        "v",
        "logtostderr",
    ];

    fn parse(line: &str) -> Result<GetTokenOptions, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        GetTokenOptions::parse_flags(&args)
    }

    #[test]
    fn every_kubelogin_flag_is_known() {
        for name in KUBELOGIN_V0_2_19 {
            assert!(flag_kind(name).is_some(), "--{name}");
        }
        let ours = FLAGS.len() - 2; // --profile and --socket are token-broker's own
        assert_eq!(ours, KUBELOGIN_V0_2_19.len());
    }

    #[test]
    fn every_kubelogin_flag_parses_and_lands_where_it_means_something() {
        type Check = fn(&GetTokenOptions) -> bool;
        let table: &[(&str, Check)] = &[
            ("--login ropc", |o| o.login.as_deref() == Some("ropc")),
            ("-l spn", |o| o.login.as_deref() == Some("spn")),
            ("--client-id c1", |o| o.spec.client_id == "c1"),
            ("--client-secret s1", |o| {
                o.credentials.client_secret == "s1"
            }),
            ("--client-certificate /c.pem", |o| {
                o.credentials.client_certificate_path == "/c.pem"
            }),
            ("--client-certificate-password p1", |o| {
                o.credentials.client_certificate_password == "p1"
            }),
            ("--username u1", |o| o.spec.username == "u1"),
            ("--password p2", |o| o.credentials.password == "p2"),
            ("--identity-resource-id /r", |o| {
                o.spec.identity_resource_id == "/r"
            }),
            ("--server-id srv", |o| o.spec.server_id == "srv"),
            ("--federated-token-file /f", |o| {
                o.credentials.federated_token_file == "/f"
            }),
            ("--authority-host https://a/", |o| {
                o.spec.authority_host == "https://a/"
            }),
            ("--azure-pipelines-service-connection-id sc", |o| {
                o.spec.service_connection_id == "sc"
            }),
            ("--token-cache-dir /x", |o| *o == GetTokenOptions::default()),
            ("--cache-dir=/x", |o| *o == GetTokenOptions::default()),
            ("-t t1.example", |o| o.spec.tenant_id == "t1.example"),
            ("--tenant-id t2.example", |o| {
                o.spec.tenant_id == "t2.example"
            }),
            ("-s sub", |o| o.spec.subscription == "sub"),
            ("--subscription=sub2", |o| o.spec.subscription == "sub2"),
            ("-e AzureChinaCloud", |o| {
                o.spec.environment == "AzureChinaCloud"
            }),
            ("--legacy", |o| o.spec.legacy),
            ("--legacy=false", |o| !o.spec.legacy),
            ("--use-azurerm-env-vars", |o| o.use_azurerm_env_vars),
            ("--pop-enabled", |o| o.pop_enabled),
            ("--timeout 2m", |o| {
                o.timeout == Some(std::time::Duration::from_secs(120))
            }),
            ("--pop-claims u=/arm/id", |o| {
                o.spec.pop_claims == "u=/arm/id"
            }),
            ("--disable-environment-override=true", |o| {
                o.disable_environment_override
            }),
            ("--disable-instance-discovery", |o| {
                *o == GetTokenOptions::default()
            }),
            ("--redirect-url http://localhost:8400/", |o| {
                o.spec.redirect_url == "http://localhost:8400/"
            }),
            ("--login-hint alice@contoso.example", |o| {
                o.spec.login_hint == "alice@contoso.example"
            }),
            ("-v 5", |o| *o == GetTokenOptions::default()),
            ("--v=9", |o| *o == GetTokenOptions::default()),
            ("--logtostderr", |o| *o == GetTokenOptions::default()),
        ];
        for (line, check) in table {
            let options = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(check(&options), "{line}: {options:?}");
        }
        // The table names every flag of kubelogin's.
        for name in KUBELOGIN_V0_2_19 {
            let named = table.iter().any(|(line, _)| {
                let flag = line.split([' ', '=']).next().unwrap();
                flag == format!("--{name}")
                    || FLAGS
                        .iter()
                        .any(|(l, s, _)| l == name && s.is_some_and(|c| flag == format!("-{c}")))
            });
            assert!(named, "--{name} is missing from the table");
        }
    }

    #[test]
    fn pop_flags_come_together_and_claims_are_checked() {
        let finish = |line: &str| parse(line).unwrap().finish();
        let base = "--server-id s -t t.example --login interactive";
        let err = finish(&format!("{base} --pop-enabled")).unwrap_err();
        assert!(err.contains("--pop-enabled needs --pop-claims"), "{err}");
        let err = finish(&format!("{base} --pop-claims u=x")).unwrap_err();
        assert!(err.contains("--pop-claims needs --pop-enabled"), "{err}");
        let (spec, _) = finish(&format!("{base} --pop-enabled --pop-claims k=v,u=/sub/x")).unwrap();
        assert_eq!(spec.pop_claims, "k=v,u=/sub/x");
        for (claims, why) in [
            ("k=v", "the u claim"),
            ("u=", "each claim is key=value"),
            ("u=x,=y", "each claim is key=value"),
            ("u=x,a.b=c", "a claim's name"),
        ] {
            let err = finish(&format!("{base} --pop-enabled --pop-claims {claims}")).unwrap_err();
            assert!(err.contains(why), "{claims}: {err}");
        }
    }

    #[test]
    fn pipelines_take_their_variables_and_other_modes_drop_the_job_token() {
        let vars = env(&[
            ("SYSTEM_ACCESSTOKEN", "job-token"),
            (
                "SYSTEM_OIDCREQUESTURI",
                "https://dev.azure.com/o/_apis/oidc",
            ),
            ("AZURESUBSCRIPTION_CLIENT_ID", "sc-client"),
            ("AZURESUBSCRIPTION_TENANT_ID", "sc.example"),
            ("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", "sc-id"),
        ]);
        let mut o = parse("--server-id s --login azurepipelines").unwrap();
        o.apply_environment(&vars);
        let (spec, creds) = o.finish().unwrap();
        assert_eq!(spec.client_id, "sc-client");
        assert_eq!(spec.tenant_id, "sc.example");
        assert_eq!(spec.service_connection_id, "sc-id");
        assert_eq!(creds.system_access_token, "job-token");
        assert_eq!(creds.oidc_request_uri, "https://dev.azure.com/o/_apis/oidc");
        // Flags win over the AZURESUBSCRIPTION_ variables, as in kubelogin.
        let mut o = parse("--server-id s -l azurepipelines --client-id mine -t t.example").unwrap();
        o.apply_environment(&vars);
        assert_eq!(o.spec.client_id, "mine");
        // A devicecode step in the same pipeline does not send the job's token on; a profile,
        // which may name azurepipelines, does.
        let mut o = parse("--server-id s -t t.example -l devicecode").unwrap();
        o.apply_environment(&vars);
        let (_, creds) = o.finish().unwrap();
        assert!(creds.system_access_token.is_empty() && creds.oidc_request_uri.is_empty());
        let mut o = parse("--profile ci").unwrap();
        o.apply_environment(&vars);
        let (_, creds) = o.finish().unwrap();
        assert_eq!(creds.system_access_token, "job-token");
    }

    #[test]
    fn azure_cli_variables() {
        let mut o = parse("--server-id s -l azurecli --timeout 1m").unwrap();
        o.apply_environment(&env(&[
            ("AZURE_CONFIG_DIR", "/home/u/.azure-work"),
            ("AZURE_CLI_TIMEOUT", "90s"),
            ("KUBECACHEDIR", "/tmp/ignored"),
        ]));
        assert_eq!(o.timeout, Some(std::time::Duration::from_secs(90)));
        let (spec, _) = o.finish().unwrap();
        assert_eq!(spec.azure_config_dir, "/home/u/.azure-work");
        // Other modes leave it behind: it would only make them need a newer brokerd.
        let mut o = parse("--server-id s -t t.example -l interactive").unwrap();
        o.apply_environment(&env(&[("AZURE_CONFIG_DIR", "/home/u/.azure-work")]));
        let (spec, _) = o.finish().unwrap();
        assert_eq!(spec.azure_config_dir, "");
        assert_eq!(spec.needs_protocol(), 1);
        // A timeout that does not parse leaves the flag's, as kubelogin does.
        let mut o = parse("--server-id s -l azurecli --timeout 1m").unwrap();
        o.apply_environment(&env(&[("AZURE_CLI_TIMEOUT", "soon")]));
        assert_eq!(o.timeout, Some(std::time::Duration::from_secs(60)));
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
