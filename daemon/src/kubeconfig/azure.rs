//! Azure's kubelogin (`kubelogin get-token …`): its flags kept, the secrets it takes as flags
//! or in `env` taken out of the file.

use broker_proto::kubelogin::GetTokenOptions;
use broker_proto::v1::{Credentials, SessionSpec};
use yaml_edit::{Mapping, YamlValue};

use super::tree::{env_value, get_text, text_of};
use super::{ConvertOptions, Converted, EXEC_API_VERSION, INSTALL_HINT, Origin, Outcome};

/// `env` entries that carry secrets; they move to the keyring.
pub(super) const SECRET_VARIABLES: &[(&str, SecretField)] = &[
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

/// Which of a session's secrets a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretField {
    ClientSecret,
    CertificatePassword,
    Password,
}

/// The session broker-shim will ask for with `options` in the environment it will run in.
pub(super) fn runtime_spec(
    options: &GetTokenOptions,
    convert: &ConvertOptions<'_>,
) -> Result<SessionSpec, String> {
    let mut at_runtime = options.clone();
    at_runtime.apply_environment(convert.env);
    at_runtime.finish().map(|(spec, _)| spec)
}

pub(super) fn program_name(command: &str) -> String {
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command);
    base.strip_suffix(".exe").unwrap_or(base).to_string()
}

pub(super) fn convert_exec(exec: &Mapping, name: &str, convert: &ConvertOptions<'_>) -> Outcome {
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
        Origin::Int128Kubelogin => match super::int128::int128_options(get_token_args) {
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
    // A user brokerd would refuse (a flag it does not support yet) keeps working as it is.
    if spec.profile.is_empty()
        && let Ok((_, input)) = crate::spec::SpecInput::from_wire(spec.clone())
        && let Err(why) = crate::spec::SessionSpec::new(&input)
    {
        return Outcome::Skipped(why.to_string());
    }

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
