//! `get-token`'s command line, spelled as kubelogin spells it, so that converting a kubeconfig
//! is a rename of the command. Parsed by hand: a CLI framework would cost start-up time on
//! every kubectl run.

use broker_proto::kubelogin::GetTokenOptions;

pub const USAGE: &str = "\
usage: broker-shim get-token --server-id ID [--tenant-id ID] [--client-id ID]
                             [--environment NAME | --authority-host URL]
                             [--login devicecode|interactive|spn|ropc|msi|azurecli|azd|workloadidentity]
                             [--client-secret S | --client-certificate FILE
                              [--client-certificate-password P]]
                             [--username U [--password P]] [--identity-resource-id ID]
                             [--federated-token-file FILE]
                             [--disable-environment-override] [--use-azurerm-env-vars]
       broker-shim get-token --profile NAME [any of the flags above, to override it]

kubectl's exec credential plugin for token-broker. It asks brokerd (over its Unix socket,
$TOKEN_BROKER_SOCKET or $XDG_RUNTIME_DIR/token-broker/broker.sock) for an access token and
prints an ExecCredential. kubelogin's get-token flags and environment variables are accepted
(the variables override the flags unless --disable-environment-override); --token-cache-dir,
--cache-dir, --timeout and --disable-instance-discovery are accepted and have no effect.";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    GetToken(Box<GetTokenOptions>),
    Help,
    Version,
}

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
];

/// kubelogin flags that mean nothing here: brokerd keeps the tokens and does its own timing.
const IGNORED_VALUE_FLAGS: &[&str] = &["token-cache-dir", "cache-dir", "timeout"];
const IGNORED_SWITCHES: &[&str] = &["disable-instance-discovery"];
const SWITCHES: &[&str] = &["disable-environment-override", "use-azurerm-env-vars"];

/// Parses the arguments after the program name. Environment variables are applied later.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("get-token") => {}
        Some("-h" | "--help" | "help") | None => return Ok(Command::Help),
        Some("-V" | "--version" | "version") => return Ok(Command::Version),
        Some(other) => {
            return Err(format!(
                "unknown command {other:?}; broker-shim only has get-token"
            ));
        }
    }

    let mut options = GetTokenOptions::default();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
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
            return Err(format!(
                "unknown or unsupported flag --{name} (see broker-shim --help)"
            ));
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
            _ => {}
        }
    }
    Ok(Command::GetToken(Box::new(options)))
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
                .ok_or_else(|| format!("unknown flag -{letter} (see broker-shim --help)"))?;
            let rest = chars.as_str();
            let inline = rest.strip_prefix('=').unwrap_or(rest);
            return Ok((long, (!inline.is_empty()).then(|| inline.to_string())));
        }
    }
    Err(format!(
        "unexpected argument {arg:?} (see broker-shim --help)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_proto::v1::{Credentials, LoginMode, SessionSpec};

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn request(s: &str) -> (SessionSpec, Credentials) {
        match parse(&args(s)).unwrap() {
            Command::GetToken(options) => options.finish().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn error(s: &str) -> String {
        match parse(&args(s)) {
            Ok(Command::GetToken(options)) => options.finish().unwrap_err(),
            Ok(other) => panic!("{other:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_what_az_aks_get_credentials_writes() {
        let (s, _) = request(
            "get-token --environment AzurePublicCloud --server-id 6dae42f8-4368-4678-94ff-3960e28e3630 \
             --client-id 80faf920-1908-4b52-b5ef-a8e7bedfc67a --tenant-id 00000000-0000-0000-0000-000000000001 \
             --login devicecode",
        );
        assert_eq!(s.server_id, "6dae42f8-4368-4678-94ff-3960e28e3630");
        assert_eq!(s.client_id, "80faf920-1908-4b52-b5ef-a8e7bedfc67a");
        assert_eq!(s.tenant_id, "00000000-0000-0000-0000-000000000001");
        assert_eq!(s.environment, "AzurePublicCloud");
        assert_eq!(s.login_mode(), LoginMode::DeviceCode);
    }

    #[test]
    fn reads_every_flag_spelling_pflag_allows() {
        let (s, _) = request(
            "get-token -l interactive --server-id=srv -t=ten -eAzureChinaCloud --cache-dir /x --timeout=5m --disable-instance-discovery",
        );
        assert_eq!(s.login_mode(), LoginMode::Interactive);
        assert_eq!(s.server_id, "srv");
        assert_eq!(s.tenant_id, "ten");
        assert_eq!(s.environment, "AzureChinaCloud");
        let (s, _) = request("get-token --login=devicecode --server-id s -t tenant -linteractive");
        assert_eq!(s.login_mode(), LoginMode::Interactive);
    }

    #[test]
    fn reads_the_non_interactive_modes_flags() {
        let (s, c) = request(
            "get-token --login spn --server-id s -t t --client-id app --client-secret shh \
             --client-certificate rel/cert.pem --client-certificate-password pw",
        );
        assert_eq!(s.login_mode(), LoginMode::ServicePrincipal);
        assert_eq!(c.client_secret, "shh");
        assert!(c.client_certificate_path.starts_with('/'), "made absolute");
        assert!(c.client_certificate_path.ends_with("rel/cert.pem"));
        assert_eq!(c.client_certificate_password, "pw");
        let (s, c) = request("get-token --login ropc --server-id s -t t --username u --password p");
        assert_eq!((s.username.as_str(), c.password.as_str()), ("u", "p"));
        let (s, _) = request("get-token --login msi --server-id s --identity-resource-id /subs/x");
        assert_eq!(s.identity_resource_id, "/subs/x");
        assert!(s.tenant_id.is_empty(), "msi needs no tenant");
        let (_, c) = request(
            "get-token --login workloadidentity --server-id s -t t --federated-token-file /t",
        );
        assert_eq!(c.federated_token_file, "/t");
        assert!(matches!(
            parse(&args("get-token --disable-environment-override --use-azurerm-env-vars")),
            Ok(Command::GetToken(o)) if o.disable_environment_override && o.use_azurerm_env_vars
        ));
    }

    #[test]
    fn a_profile_stands_in_for_the_required_flags() {
        let (s, _) = request("get-token --profile prod");
        assert_eq!(s.profile, "prod");
        assert_eq!(
            s.login_mode(),
            LoginMode::Unspecified,
            "the profile decides"
        );
        assert_eq!(s.environment, "", "the profile decides");
        let (s, _) = request("get-token --profile=prod --tenant-id other -l interactive");
        assert_eq!(s.tenant_id, "other");
        assert_eq!(s.login_mode(), LoginMode::Interactive);
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let cases = [
            ("get-token --tenant-id t", "--server-id is required"),
            ("get-token --server-id s", "--tenant-id is required"),
            (
                "get-token --server-id s --tenant-id t --login magic",
                "--login \"magic\" is not supported",
            ),
            (
                "get-token --server-id s --tenant-id t --pop-enabled",
                "unknown or unsupported flag --pop-enabled",
            ),
            ("get-token --server-id", "--server-id needs a value"),
            ("get-token -x", "unknown flag -x"),
            ("token", "unknown command"),
        ];
        for (input, expected) in cases {
            let err = error(input);
            assert!(err.starts_with(expected), "{input}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        assert_eq!(parse(&args("--version")).unwrap(), Command::Version);
        assert_eq!(parse(&args("get-token --help")).unwrap(), Command::Help);
    }
}
