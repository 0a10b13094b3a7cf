//! brokerd's configuration: the refresh policy, the login timeout, the log level and named
//! profiles, from a TOML file that is reloaded while brokerd runs.
//!
//! A missing file means the defaults. A file that does not parse, names an unknown key or holds
//! a value out of range is refused as a whole, with one line that says where: at start-up brokerd
//! exits; on reload the configuration in force stays (see [`watch`]).

mod edit;
pub mod watch;

pub use edit::save_profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spec::{LoginMode, SessionSpec, SpecInput};

/// Overrides the configuration file's path.
pub const CONFIG_ENV: &str = "TOKEN_BROKER_CONFIG";

/// `$TOKEN_BROKER_CONFIG`, else `$XDG_CONFIG_HOME/token-broker/config.toml` (the platform's
/// config directory elsewhere).
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    directories::ProjectDirs::from("", "", "token-broker")
        .map(|dirs| dirs.config_dir().join("config.toml"))
}

/// When and how sessions are refreshed.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshPolicy {
    /// A token with less than this left is refreshed before it is served.
    #[serde(with = "humantime_serde")]
    pub min_remaining: Duration,
    /// Taken off the token's real expiry in what kubectl is told.
    #[serde(with = "humantime_serde")]
    pub expiry_margin: Duration,
    /// A session that served a token (or signed in) this recently is active: refreshed ahead
    /// of time.
    #[serde(with = "humantime_serde")]
    pub active_window: Duration,
    /// An idle session's refresh token is still redeemed this often, so that Entra's 90-day
    /// inactivity limit is never reached.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Planned refresh times are spread by ± this fraction.
    pub jitter: f64,
    /// At most this many token requests to identity providers at once.
    pub max_concurrent: usize,
    /// First retry delay after a passing failure; it doubles up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            min_remaining: Duration::from_secs(10 * 60),
            expiry_margin: Duration::from_secs(2 * 60),
            active_window: Duration::from_secs(12 * 3600),
            keepalive: Duration::from_secs(7 * 86_400),
            jitter: 0.1,
            max_concurrent: 4,
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginPolicy {
    /// How long a login waits for the user before it fails and frees its waiters.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Raise one desktop notification when a caller without a terminal (a GUI, a background
    /// tool) needs a sign-in; false turns notifications off (the callers still fail fast with
    /// the command to run).
    pub notify: bool,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            timeout: Duration::from_secs(5 * 60),
            notify: true,
        }
    }
}

/// kubelogin's get-token parameters under a short name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub authority_host: String,
    #[serde(default)]
    pub login: Option<String>,
    /// ROPC: the user to sign in as.
    #[serde(default)]
    pub username: String,
    /// Managed identity: a user-assigned identity's ARM resource id.
    #[serde(default)]
    pub identity_resource_id: String,
    /// Device code, interactive: the account to sign in as (kubelogin's `--login-hint`).
    #[serde(default)]
    pub login_hint: String,
    /// Interactive: where Entra sends the browser back (kubelogin's `--redirect-url`).
    #[serde(default)]
    pub redirect_url: String,
    /// Azure CLI: the subscription (kubelogin's `--subscription`).
    #[serde(default)]
    pub subscription: String,
    /// Azure Pipelines: the service connection (`--azure-pipelines-service-connection-id`).
    #[serde(default)]
    pub service_connection_id: String,
    /// Proof-of-possession (Azure Arc): `u=<the cluster's ARM id>[,key=value…]`
    /// (`--pop-claims`; it implies `--pop-enabled`).
    #[serde(default)]
    pub pop_claims: String,
    /// Any OpenID Connect issuer instead of Entra (int128/kubelogin's `--oidc-issuer-url`);
    /// `client_id` is then the issuer's client, and `server_id` and `tenant_id` are not used.
    #[serde(default)]
    pub oidc_issuer_url: String,
    /// OpenID Connect: scopes to ask for besides `openid` (`--oidc-extra-scope`).
    #[serde(default)]
    pub oidc_extra_scopes: Vec<String>,
    /// OpenID Connect: serve the access token instead of the ID token.
    #[serde(default)]
    pub oidc_use_access_token: bool,
    /// OpenID Connect: `KEY=VALUE`s added to the authorization request
    /// (`--oidc-auth-request-extra-params`).
    #[serde(default)]
    pub oidc_auth_params: Vec<String>,
    /// The session this profile names is served on the forwarding socket too.
    #[serde(default)]
    pub allow_forwarding: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A tracing filter (`info`, `debug`, `brokerd=debug,warn`); RUST_LOG wins when set.
    pub log_level: Option<String>,
    /// Whether broker-shim and brokerctl may start brokerd when nothing answers on the socket.
    /// Read by the brokerd they start (`--on-demand`), which stops at once when it is false.
    pub start_on_demand: bool,
    pub refresh: RefreshPolicy,
    pub login: LoginPolicy,
    pub profiles: BTreeMap<String, Profile>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: None,
            start_on_demand: true,
            refresh: RefreshPolicy::default(),
            login: LoginPolicy::default(),
            profiles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Reads `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|reason| ConfigError::Invalid {
                path: path.to_path_buf(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// Parses and checks a configuration; the error is one line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let r = &self.refresh;
        let day = Duration::from_secs(86_400);
        if !(0.0..=0.5).contains(&r.jitter) {
            return Err(format!(
                "refresh.jitter must be between 0 and 0.5, not {}",
                r.jitter
            ));
        }
        if !(1..=256).contains(&r.max_concurrent) {
            return Err(format!(
                "refresh.max_concurrent must be between 1 and 256, not {}",
                r.max_concurrent
            ));
        }
        if r.min_remaining > day {
            return Err("refresh.min_remaining must be at most 1 day".into());
        }
        if r.expiry_margin >= r.min_remaining {
            return Err(format!(
                "refresh.expiry_margin ({}) must be less than refresh.min_remaining ({})",
                humantime::format_duration(r.expiry_margin),
                humantime::format_duration(r.min_remaining)
            ));
        }
        if r.active_window.is_zero() {
            return Err("refresh.active_window must be more than 0".into());
        }
        if r.keepalive < Duration::from_secs(3600) || r.keepalive >= 90 * day {
            return Err(
                "refresh.keepalive must be at least 1h and under 90 days (Entra forgets a refresh \
                 token unused for 90 days)"
                    .into(),
            );
        }
        if r.backoff_min < Duration::from_secs(1) || r.backoff_min > r.backoff_max {
            return Err(
                "refresh.backoff_min must be at least 1s and at most refresh.backoff_max".into(),
            );
        }
        if r.backoff_max > Duration::from_secs(3600) {
            return Err("refresh.backoff_max must be at most 1h".into());
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&self.login.timeout) {
            return Err("login.timeout must be between 10s and 1h".into());
        }
        if let Some(level) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| format!("log_level {level:?} is not a valid filter: {e}"))?;
        }
        for (name, profile) in &self.profiles {
            profile
                .spec(None)
                .map_err(|e| format!("profile {name:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Why a session spec could not be resolved against the configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Resolve {
    #[error(transparent)]
    Spec(crate::spec::SpecError),
    #[error("its profile is not in brokerd's configuration")]
    UnknownProfile,
    #[error("its profile is not valid: {0}")]
    InvalidProfile(String),
}

impl Config {
    /// The session `input` names, over profile `profile` when that is not empty: what brokerd
    /// serves, and what `brokerctl status` works out for each kubeconfig context.
    pub fn resolve(&self, profile: &str, input: &SpecInput) -> Result<SessionSpec, Resolve> {
        if profile.is_empty() {
            return SessionSpec::new(input).map_err(Resolve::Spec);
        }
        self.profiles
            .get(profile)
            .ok_or(Resolve::UnknownProfile)?
            .spec(Some(input))
            .map_err(Resolve::InvalidProfile)
    }
}

impl Profile {
    /// The session this profile names, with `overrides` (a caller's explicit flags) on top.
    pub fn spec(&self, overrides: Option<&SpecInput>) -> Result<SessionSpec, String> {
        let given = overrides.cloned().unwrap_or_default();
        let login_mode = match (given.login_mode, &self.login) {
            (Some(mode), _) => mode,
            (None, Some(name)) => LoginMode::from_name(name).ok_or_else(|| {
                format!(
                    "login {name:?} is not supported; use one of {}",
                    broker_proto::login_mode_names()
                )
            })?,
            (None, None) => LoginMode::DeviceCode,
        };
        // An environment given by the caller replaces the profile's authority host.
        let authority_host = if !given.environment.is_empty() && given.authority_host.is_empty() {
            String::new()
        } else {
            pick(&given.authority_host, &self.authority_host)
        };
        SessionSpec::new(&SpecInput {
            environment: pick(&given.environment, &self.environment),
            authority_host,
            tenant_id: pick(&given.tenant_id, &self.tenant_id),
            client_id: pick(&given.client_id, &self.client_id),
            server_id: pick(&given.server_id, &self.server_id),
            login_mode: Some(login_mode),
            username: pick(&given.username, &self.username),
            identity_resource_id: pick(&given.identity_resource_id, &self.identity_resource_id),
            login_hint: pick(&given.login_hint, &self.login_hint),
            redirect_url: pick(&given.redirect_url, &self.redirect_url),
            subscription: pick(&given.subscription, &self.subscription),
            service_connection_id: pick(&given.service_connection_id, &self.service_connection_id),
            // Given by the caller only: where its own environment points.
            azure_config_dir: given.azure_config_dir.clone(),
            legacy: given.legacy,
            pop_claims: pick(&given.pop_claims, &self.pop_claims),
            oidc_issuer_url: pick(&given.oidc_issuer_url, &self.oidc_issuer_url),
            oidc_extra_scopes: pick(&given.oidc_extra_scopes, &self.oidc_extra_scopes),
            oidc_use_access_token: given.oidc_use_access_token || self.oidc_use_access_token,
            oidc_auth_params: pick(&given.oidc_auth_params, &self.oidc_auth_params),
            // Given by the caller only: the PEM its flags point at (a profile holds no files).
            oidc_certificate_authority: given.oidc_certificate_authority.clone(),
        })
        .map_err(|e| e.to_string())
    }
}

/// The caller's value when it gave one, else the profile's own. A repeatable flag given at all
/// replaces the profile's whole list.
fn pick<T: Clone + Default + PartialEq>(given: &T, own: &T) -> T {
    if *given == T::default() { own } else { given }.clone()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let missing = Config::load(Path::new("/nonexistent/token-broker.toml")).unwrap();
        assert_eq!(missing, Config::default());
    }

    #[test]
    fn every_key_parses() {
        let config = Config::parse(
            r#"
            log_level = "debug"
            [refresh]
            min_remaining = "15m"
            expiry_margin = "3m"
            active_window = "8h"
            keepalive = "3days"
            jitter = 0.2
            max_concurrent = 8
            backoff_min = "2s"
            backoff_max = "10m"
            [login]
            timeout = "2m"
            [profiles.prod]
            server_id = "6dae42f8-4368-4678-94ff-3960e28e3630"
            tenant_id = "contoso.example"
            environment = "AzureUSGovernmentCloud"
            login = "interactive"
            "#,
        )
        .unwrap();
        assert_eq!(config.log_level.as_deref(), Some("debug"));
        assert_eq!(config.refresh.min_remaining, Duration::from_secs(900));
        assert_eq!(config.refresh.keepalive, Duration::from_secs(3 * 86_400));
        assert_eq!(config.refresh.max_concurrent, 8);
        assert_eq!(config.login.timeout, Duration::from_secs(120));
        let spec = config.profiles["prod"].spec(None).unwrap();
        assert_eq!(spec.authority.as_str(), "https://login.microsoftonline.us");
        assert_eq!(spec.login_mode, LoginMode::Interactive);
    }

    #[test]
    fn an_openid_connect_profile_names_an_issuer_session_and_flags_override_it() {
        let config = Config::parse(
            r#"
            [profiles.keycloak]
            oidc_issuer_url = "https://sso.example/realms/dev"
            client_id = "kubernetes"
            oidc_extra_scopes = ["email"]
            oidc_auth_params = ["prompt=consent"]
            login = "devicecode"
            "#,
        )
        .unwrap();
        let profile = &config.profiles["keycloak"];
        let spec = profile.spec(None).unwrap();
        let oidc = spec.oidc.as_ref().expect("an OpenID Connect session");
        assert_eq!(spec.client_id, "kubernetes");
        assert!(spec.scopes().iter().any(|s| s == "email"), "{spec:?}");
        assert!(!oidc.use_access_token);
        let given = SpecInput {
            oidc_extra_scopes: vec!["groups".into()],
            oidc_use_access_token: true,
            ..SpecInput::default()
        };
        let spec = profile.spec(Some(&given)).unwrap();
        assert!(spec.oidc.as_ref().unwrap().use_access_token);
        let scopes = spec.scopes();
        assert!(scopes.iter().any(|s| s == "groups"), "{scopes:?}");
        assert!(
            !scopes.iter().any(|s| s == "email"),
            "a given list replaces the profile's"
        );

        let err =
            Config::parse("[profiles.x]\noidc_issuer_url = \"http://sso.example\"").unwrap_err();
        assert!(err.contains("profile \"x\""), "{err}");
    }

    #[test]
    fn mistakes_are_one_line_and_name_the_key() {
        let cases = [
            ("[refresh]\nmin_remainig = \"5m\"", "min_remainig"),
            (
                "[refresh]\njitter = 2.0",
                "refresh.jitter must be between 0 and 0.5",
            ),
            ("[refresh]\nmax_concurrent = 0", "refresh.max_concurrent"),
            (
                "[refresh]\nmin_remaining = \"ten minutes\"",
                "min_remaining",
            ),
            (
                "[refresh]\nexpiry_margin = \"20m\"",
                "must be less than refresh.min_remaining",
            ),
            ("[refresh]\nkeepalive = \"100days\"", "under 90 days"),
            ("log_level = \"=nonsense=\"", "log_level"),
            (
                "[profiles.x]\ntenant_id = \"t\"",
                "profile \"x\": --server-id is required",
            ),
            (
                "[profiles.x]\nserver_id = \"s\"\ntenant_id = \"t\"\nlogin = \"spn\"",
                "profile \"x\"",
            ),
            ("[login]\ntimeout = \"1s\"", "login.timeout"),
            ("this is not toml", ""),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn explicit_flags_override_a_profile() {
        let profile = Profile {
            server_id: "s".into(),
            tenant_id: "t.example".into(),
            client_id: String::new(),
            environment: String::new(),
            authority_host: "https://login.microsoftonline.com/".into(),
            login: Some("interactive".into()),
            username: String::new(),
            identity_resource_id: String::new(),
            allow_forwarding: false,
            ..Profile::default()
        };
        let given = SpecInput {
            tenant_id: "other.example".into(),
            login_mode: Some(LoginMode::DeviceCode),
            ..SpecInput::default()
        };
        let spec = profile.spec(Some(&given)).unwrap();
        assert_eq!(spec.tenant_id, "other.example");
        assert_eq!(spec.server_id, "s");
        assert_eq!(spec.login_mode, LoginMode::DeviceCode);
        // A caller's environment replaces the profile's authority host.
        let given = SpecInput {
            environment: "AzureChinaCloud".into(),
            ..SpecInput::default()
        };
        let spec = profile.spec(Some(&given)).unwrap();
        assert_eq!(spec.authority.as_str(), "https://login.chinacloudapi.cn");
    }
}
