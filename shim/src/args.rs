//! `get-token`'s command line, spelled as kubelogin spells it, so that converting a kubeconfig
//! is a rename of the command. Parsed by hand: a CLI framework would cost start-up time on
//! every kubectl run.

use broker_proto::kubelogin::GetTokenOptions;

pub const USAGE: &str = "\
usage: broker-shim get-token --server-id ID [--tenant-id ID] [--client-id ID]
                             [--environment NAME | --authority-host URL]
                             [--login devicecode|interactive|spn|ropc|msi|azurecli|azd|workloadidentity|
                                      azurepipelines]
                             [--client-secret S | --client-certificate FILE
                              [--client-certificate-password P]]
                             [--username U [--password P]] [--identity-resource-id ID]
                             [--federated-token-file FILE]
                             [--login-hint USER] [--redirect-url URL] [--subscription ID]
                             [--azure-pipelines-service-connection-id ID]
                             [--disable-environment-override] [--use-azurerm-env-vars]
                             [--timeout DURATION] [--socket PATH]
       broker-shim get-token --profile NAME [any of the flags above, to override it]

kubectl's exec credential plugin for token-broker. It asks brokerd (over its Unix socket:
--socket, else $TOKEN_BROKER_SOCKET, else $XDG_RUNTIME_DIR/token-broker/broker.sock) for an
access token and prints an ExecCredential. kubelogin's get-token flags and environment
variables are accepted (the variables override the flags unless
--disable-environment-override). --timeout (60s, 5m, 1m30s) bounds the whole run, a login at
the terminal included; without it, 10 minutes when a login may prompt and 90 seconds
otherwise. Every other flag of kubelogin v0.2.19 is accepted: --token-cache-dir, --cache-dir,
--disable-instance-discovery, -v and --logtostderr have no effect; --legacy is refused by
brokerd with the reason. With --oidc-issuer-url, int128/kubelogin's flags apply instead
(any OpenID Connect issuer).";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    GetToken(Box<GetTokenOptions>),
    Help,
    Version,
}

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

    let rest: Vec<String> = args.cloned().collect();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let options =
        GetTokenOptions::parse_flags(&rest).map_err(|e| format!("{e} (see broker-shim --help)"))?;
    Ok(Command::GetToken(Box::new(options)))
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
            "get-token -l interactive --server-id=srv -t=ten.example -eAzureChinaCloud --cache-dir /x --timeout=5m --disable-instance-discovery",
        );
        assert_eq!(s.login_mode(), LoginMode::Interactive);
        assert_eq!(s.server_id, "srv");
        assert_eq!(s.tenant_id, "ten.example");
        assert_eq!(s.environment, "AzureChinaCloud");
        let (s, _) =
            request("get-token --login=devicecode --server-id s -t tenant.example -linteractive");
        assert_eq!(s.login_mode(), LoginMode::Interactive);
    }

    #[test]
    fn reads_the_non_interactive_modes_flags() {
        let (s, c) = request(
            "get-token --login spn --server-id s -t t.example --client-id app --client-secret shh \
             --client-certificate rel/cert.pem --client-certificate-password pw",
        );
        assert_eq!(s.login_mode(), LoginMode::ServicePrincipal);
        assert_eq!(c.client_secret, "shh");
        assert!(c.client_certificate_path.starts_with('/'), "made absolute");
        assert!(c.client_certificate_path.ends_with("rel/cert.pem"));
        assert_eq!(c.client_certificate_password, "pw");
        let (s, c) =
            request("get-token --login ropc --server-id s -t t.example --username u --password p");
        assert_eq!((s.username.as_str(), c.password.as_str()), ("u", "p"));
        let (s, _) = request("get-token --login msi --server-id s --identity-resource-id /subs/x");
        assert_eq!(s.identity_resource_id, "/subs/x");
        assert!(s.tenant_id.is_empty(), "msi needs no tenant");
        let (_, c) = request(
            "get-token --login workloadidentity --server-id s -t t.example --federated-token-file /t",
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
        let (s, _) = request("get-token --profile=prod --tenant-id other.example -l interactive");
        assert_eq!(s.tenant_id, "other.example");
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
                "--pop-enabled needs --pop-claims",
            ),
            (
                "get-token --server-id s --tenant-id t --no-such-flag x",
                "unknown or unsupported flag --no-such-flag",
            ),
            (
                "get-token --server-id s --tenant-id t --oidc-issuer-url https://i.example",
                "--server-id is Azure kubelogin's",
            ),
            (
                "get-token --server-id s --tenant-id t --legacy=maybe",
                "--legacy=\"maybe\": expected true or false",
            ),
            (
                "get-token --server-id s --tenant-id my/tenant",
                "--tenant-id \"my/tenant\" is not valid: a tenant is a GUID",
            ),
            (
                "get-token --server-id s --tenant-id t.example --timeout forever",
                "--timeout \"forever\" is not a duration",
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
