//! `get-token`'s command line, spelled as kubelogin spells it, so that converting a kubeconfig
//! is a rename of the command. Parsed by hand: a CLI framework would cost start-up time on
//! every kubectl run.

use broker_proto::v1::SessionSpec;

pub const USAGE: &str = "\
usage: broker-shim get-token --server-id ID --tenant-id ID [--client-id ID]
                             [--environment NAME | --authority-host URL]
                             [--login devicecode|interactive]
       broker-shim get-token --profile NAME [any of the flags above, to override it]

kubectl's exec credential plugin for token-broker. It asks brokerd (over its Unix socket,
$TOKEN_BROKER_SOCKET or $XDG_RUNTIME_DIR/token-broker/broker.sock) for an access token and
prints an ExecCredential. kubelogin's get-token flags are accepted; --token-cache-dir,
--cache-dir, --timeout, --disable-instance-discovery and --disable-environment-override
are accepted and have no effect.";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    GetToken(SessionSpec),
    Help,
    Version,
}

/// Flags that take a value and shape the session.
const SPEC_FLAGS: &[(&str, Option<char>)] = &[
    ("profile", None),
    ("server-id", None),
    ("client-id", None),
    ("tenant-id", Some('t')),
    ("environment", Some('e')),
    ("login", Some('l')),
    ("authority-host", None),
];

/// kubelogin flags that mean nothing here: brokerd keeps the tokens and does its own timing.
const IGNORED_VALUE_FLAGS: &[&str] = &["token-cache-dir", "cache-dir", "timeout"];
const IGNORED_SWITCHES: &[&str] = &["disable-instance-discovery", "disable-environment-override"];

/// Parses the arguments after the program name. `authority_host_env` is AZURE_AUTHORITY_HOST,
/// used when no --authority-host is given.
pub fn parse(args: &[String], authority_host_env: Option<String>) -> Result<Command, String> {
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

    // Empty fields are "not given": brokerd applies the defaults (or the profile's values).
    let mut spec = SessionSpec::default();
    let mut login = None;
    let mut authority_host = None;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = split_flag(arg)?;
        if IGNORED_SWITCHES.contains(&name.as_str()) {
            // A switch may still be written `--switch=true`; nothing to consume either way.
            continue;
        }
        let is_spec_flag = SPEC_FLAGS.iter().any(|(long, _)| *long == name);
        if !is_spec_flag && !IGNORED_VALUE_FLAGS.contains(&name.as_str()) {
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
        match name.as_str() {
            "profile" => spec.profile = value,
            "server-id" => spec.server_id = value,
            "client-id" => spec.client_id = value,
            "tenant-id" => spec.tenant_id = value,
            "environment" => spec.environment = value,
            "login" => login = Some(value),
            "authority-host" => authority_host = Some(value),
            _ => {}
        }
    }

    if let Some(login) = login {
        let mode = broker_proto::parse_login_mode(&login).ok_or_else(|| {
            format!("--login {login:?} is not supported; use devicecode or interactive")
        })?;
        spec.set_login_mode(mode);
    }
    spec.authority_host = authority_host.or(authority_host_env).unwrap_or_default();
    if spec.profile.is_empty() {
        if spec.server_id.is_empty() {
            return Err("--server-id is required (or --profile)".into());
        }
        if spec.tenant_id.is_empty() {
            return Err("--tenant-id is required (or --profile)".into());
        }
    }
    Ok(Command::GetToken(spec))
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
            let long = SPEC_FLAGS
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
    use broker_proto::v1::LoginMode;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn spec(s: &str) -> SessionSpec {
        match parse(&args(s), None).unwrap() {
            Command::GetToken(spec) => spec,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_what_az_aks_get_credentials_writes() {
        let s = spec(
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
    fn a_profile_stands_in_for_the_required_flags() {
        let s = spec("get-token --profile prod");
        assert_eq!(s.profile, "prod");
        assert_eq!(
            s.login_mode(),
            LoginMode::Unspecified,
            "the profile decides"
        );
        assert_eq!(s.environment, "", "the profile decides");
        let s = spec("get-token --profile=prod --tenant-id other -l interactive");
        assert_eq!(s.tenant_id, "other");
        assert_eq!(s.login_mode(), LoginMode::Interactive);
    }

    #[test]
    fn reads_every_flag_spelling_pflag_allows() {
        let s = spec(
            "get-token -l interactive --server-id=srv -t=ten -eAzureChinaCloud --cache-dir /x --timeout=5m --disable-instance-discovery",
        );
        assert_eq!(s.login_mode(), LoginMode::Interactive);
        assert_eq!(s.server_id, "srv");
        assert_eq!(s.tenant_id, "ten");
        assert_eq!(s.environment, "AzureChinaCloud");
        let s = spec("get-token --login=devicecode --server-id s -t tenant -linteractive");
        assert_eq!(s.login_mode(), LoginMode::Interactive);
    }

    #[test]
    fn authority_host_flag_wins_over_the_environment_variable() {
        let a = args("get-token --server-id s --tenant-id t");
        let Command::GetToken(s) = parse(&a, Some("http://127.0.0.1:9/".into())).unwrap() else {
            panic!()
        };
        assert_eq!(s.authority_host, "http://127.0.0.1:9/");
        let a = args("get-token --server-id s --tenant-id t --authority-host https://x/");
        let Command::GetToken(s) = parse(&a, Some("http://127.0.0.1:9/".into())).unwrap() else {
            panic!()
        };
        assert_eq!(s.authority_host, "https://x/");
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        let cases = [
            ("get-token --tenant-id t", "--server-id is required"),
            ("get-token --server-id s", "--tenant-id is required"),
            (
                "get-token --server-id s --tenant-id t --login spn",
                "--login \"spn\" is not supported",
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
            let err = parse(&args(input), None).unwrap_err();
            assert!(err.starts_with(expected), "{input}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&[], None).unwrap(), Command::Help);
        assert_eq!(parse(&args("--version"), None).unwrap(), Command::Version);
        assert_eq!(
            parse(&args("get-token --help"), None).unwrap(),
            Command::Help
        );
    }
}
