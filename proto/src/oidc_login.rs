//! int128/kubelogin's `get-token` flags (`kubectl oidc-login get-token …`), for any OpenID
//! Connect issuer: read into the same [`GetTokenOptions`] as Azure kubelogin's, so that
//! converting such a kubeconfig user is a rename of its command.
//!
//! The grant type becomes the login mode: `authcode` and `authcode-keyboard` sign in in a
//! browser (`interactive`), `device-code` with a device code, `password` with ROPC,
//! `client-credentials` as a confidential client (`spn`); `auto`, int128's default, is
//! `password` when a username is given and `authcode` otherwise, as int128's is.

use crate::kubelogin::{Browser, Flag, FlagTable, GetTokenOptions, Kind, read_flags};

/// int128/kubelogin's flags (its `docs/usage.md`), klog's global ones, and token-broker's
/// `--socket` and `--profile`.
const FLAGS: &FlagTable = &[
    ("oidc-issuer-url", None, Kind::Value),
    ("oidc-client-id", None, Kind::Value),
    ("oidc-client-secret", None, Kind::Value),
    ("oidc-redirect-url", None, Kind::Value),
    ("oidc-extra-scope", None, Kind::Value),
    ("oidc-use-access-token", None, Kind::Switch),
    ("oidc-request-header", None, Kind::Value),
    ("force-refresh", None, Kind::Switch),
    ("token-cache-dir", None, Kind::Value),
    ("token-cache-storage", None, Kind::Value),
    ("certificate-authority", None, Kind::Value),
    ("certificate-authority-data", None, Kind::Value),
    ("insecure-skip-tls-verify", None, Kind::Switch),
    ("tls-renegotiation-once", None, Kind::Switch),
    ("tls-renegotiation-freely", None, Kind::Switch),
    ("oidc-pkce-method", None, Kind::Value),
    ("grant-type", None, Kind::Value),
    ("listen-address", None, Kind::Value),
    ("skip-open-browser", None, Kind::Switch),
    ("browser-command", None, Kind::Value),
    ("authentication-timeout-sec", None, Kind::Value),
    ("local-server-cert", None, Kind::Value),
    ("local-server-key", None, Kind::Value),
    ("open-url-after-authentication", None, Kind::Value),
    ("oidc-auth-request-extra-params", None, Kind::Value),
    ("username", None, Kind::Value),
    ("password", None, Kind::Value),
    // klog's, which int128/kubelogin adds to every command.
    ("add_dir_header", None, Kind::Switch),
    ("alsologtostderr", None, Kind::Switch),
    ("log_backtrace_at", None, Kind::Value),
    ("log_dir", None, Kind::Value),
    ("log_file", None, Kind::Value),
    ("log_file_max_size", None, Kind::Value),
    ("logtostderr", None, Kind::Switch),
    ("one_output", None, Kind::Switch),
    ("skip_headers", None, Kind::Switch),
    ("skip_log_headers", None, Kind::Switch),
    ("stderrthreshold", None, Kind::Value),
    ("v", Some('v'), Kind::Value),
    ("vmodule", None, Kind::Value),
    ("socket", None, Kind::Value),
    ("profile", None, Kind::Value),
];

/// Whether `args` are int128/kubelogin's: they name an issuer.
pub(crate) fn names_an_issuer(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--oidc-issuer-url" || a.starts_with("--oidc-issuer-url="))
}

pub(crate) fn parse_flags(args: &[String]) -> Result<GetTokenOptions, String> {
    // A mix of the two kubelogins' flags is a mistake worth naming.
    for arg in args {
        let name = arg
            .trim_start_matches('-')
            .split('=')
            .next()
            .unwrap_or_default();
        if arg.starts_with("--")
            && !FLAGS.iter().any(|(long, _, _)| *long == name)
            && crate::kubelogin::is_azure_flag(name)
        {
            return Err(format!(
                "--{name} is Azure kubelogin's; with --oidc-issuer-url, int128/kubelogin's \
                 flags apply"
            ));
        }
    }
    let mut options = GetTokenOptions::default();
    let mut grant_type = String::from("auto");
    let mut listen_address = None;
    read_flags(FLAGS, args, |name, flag| {
        let (spec, creds) = (&mut options.spec, &mut options.credentials);
        let value = match flag {
            Flag::Switch(on) => {
                match name {
                    "oidc-use-access-token" => spec.oidc_use_access_token = on,
                    "skip-open-browser" if on => options.browser = Browser::Skip,
                    "insecure-skip-tls-verify" if on => {
                        return Err("--insecure-skip-tls-verify is refused: brokerd sends \
                                    secrets to the issuer and checks whom it talks to"
                            .into());
                    }
                    // The cache and TLS renegotiation flags mean nothing here.
                    _ => {}
                }
                return Ok(());
            }
            Flag::Value(value) => value,
        };
        match name {
            "oidc-issuer-url" => spec.oidc_issuer_url = value,
            "oidc-client-id" => spec.client_id = value,
            "oidc-client-secret" => creds.client_secret = value,
            "oidc-redirect-url" => spec.redirect_url = value,
            "oidc-extra-scope" => spec.oidc_extra_scopes.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "oidc-auth-request-extra-params" => {
                for pair in value.split(',').filter(|p| !p.is_empty()) {
                    if !pair.contains('=') {
                        return Err(format!(
                            "--oidc-auth-request-extra-params {pair:?}: expected key=value"
                        ));
                    }
                    spec.oidc_auth_params.push(pair.to_string());
                }
            }
            "grant-type" => grant_type = value,
            // --skip-open-browser wins, wherever it stands.
            "browser-command" if options.browser != Browser::Skip => {
                options.browser = Browser::Command(value);
            }
            "listen-address" => {
                listen_address.get_or_insert(value);
            }
            "authentication-timeout-sec" => {
                let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--authentication-timeout-sec {value:?} is not a number of seconds")
                })?;
                options.timeout = Some(std::time::Duration::from_secs(seconds));
            }
            "username" => spec.username = value,
            "password" => creds.password = value,
            "certificate-authority" => options.ca_files.push(value),
            "certificate-authority-data" => options.ca_data.push(value),
            "local-server-cert" | "local-server-key" => {
                return Err(format!(
                    "--{name} is not supported by this token-broker yet: the browser comes back \
                     to brokerd over http on loopback, as Entra and most issuers allow"
                ));
            }
            // brokerd always sends an S256 challenge; an issuer without PKCE ignores it.
            "oidc-pkce-method" if !matches!(value.as_str(), "auto" | "S256" | "no") => {
                return Err(format!(
                    "--oidc-pkce-method {value:?}: use auto, S256 or no"
                ));
            }
            "socket" => options.socket = Some(value),
            "profile" => spec.profile = value,
            _ => {}
        }
        Ok(())
    })?;
    let login = match grant_type.as_str() {
        "auto" if !options.spec.username.is_empty() => "ropc",
        "auto" | "authcode" | "authcode-keyboard" => "interactive",
        "device-code" => "devicecode",
        "password" => "ropc",
        "client-credentials" => "spn",
        other => {
            return Err(format!(
                "--grant-type {other:?}: use auto, authcode, authcode-keyboard, device-code, \
                 password or client-credentials"
            ));
        }
    };
    options.login = Some(login.into());
    // int128/kubelogin's browser comes back to http://localhost:<port of its listener>.
    if options.spec.redirect_url.is_empty()
        && let Some(address) = listen_address
    {
        let port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| format!("--listen-address {address:?}: expected HOST:PORT"))?;
        options.spec.redirect_url = format!("http://localhost:{port}");
    }
    if options.spec.client_id.is_empty() {
        return Err("--oidc-client-id is required with --oidc-issuer-url".into());
    }
    Ok(options)
}

/// `get-token` and int128/kubelogin's flags for these options; secrets left out.
pub(crate) fn to_args(options: &GetTokenOptions) -> Vec<String> {
    let spec = &options.spec;
    let mut args = vec!["get-token".to_string()];
    let mut flag = |name: &str, value: &str| {
        if !value.is_empty() {
            args.push(format!("--{name}={value}"));
        }
    };
    flag("oidc-issuer-url", &spec.oidc_issuer_url);
    flag("oidc-client-id", &spec.client_id);
    for scope in &spec.oidc_extra_scopes {
        flag("oidc-extra-scope", scope);
    }
    for param in &spec.oidc_auth_params {
        flag("oidc-auth-request-extra-params", param);
    }
    flag("oidc-redirect-url", &spec.redirect_url);
    flag("username", &spec.username);
    let grant_type = match options.login.as_deref() {
        Some("devicecode") => "device-code",
        Some("ropc") => "password",
        Some("spn") => "client-credentials",
        _ => "authcode",
    };
    flag("grant-type", grant_type);
    for file in &options.ca_files {
        flag("certificate-authority", file);
    }
    for data in &options.ca_data {
        flag("certificate-authority-data", data);
    }
    flag("profile", &spec.profile);
    flag("socket", options.socket.as_deref().unwrap_or(""));
    if let Some(timeout) = options.timeout {
        flag(
            "authentication-timeout-sec",
            &timeout.as_secs().max(1).to_string(),
        );
    }
    if let Browser::Command(command) = &options.browser {
        args.push(format!("--browser-command={command}"));
    }
    if spec.oidc_use_access_token {
        args.push("--oidc-use-access-token".into());
    }
    if options.browser == Browser::Skip {
        args.push("--skip-open-browser".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<GetTokenOptions, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        GetTokenOptions::parse_flags(&args)
    }

    #[test]
    fn int128_flags_become_an_oidc_session() {
        let o = parse(
            "--oidc-issuer-url=https://idp.example/realms/dev --oidc-client-id kube \
             --oidc-client-secret s3cret --oidc-extra-scope email --oidc-extra-scope=profile,groups \
             --grant-type device-code --oidc-auth-request-extra-params=prompt=consent \
             --token-cache-dir /x --token-cache-storage keyring --force-refresh -v 1",
        )
        .unwrap();
        assert_eq!(o.spec.oidc_issuer_url, "https://idp.example/realms/dev");
        assert_eq!(o.spec.client_id, "kube");
        assert_eq!(o.credentials.client_secret, "s3cret");
        assert_eq!(o.spec.oidc_extra_scopes, ["email", "profile", "groups"]);
        assert_eq!(o.spec.oidc_auth_params, ["prompt=consent"]);
        assert_eq!(o.login.as_deref(), Some("devicecode"));
        assert!(!o.spec.oidc_use_access_token);
    }

    #[test]
    fn written_back_as_int128_flags_without_the_secret() {
        let o = parse(
            "--oidc-issuer-url https://i.example/r --oidc-client-id c --oidc-client-secret s \
             --oidc-extra-scope email --grant-type device-code --oidc-use-access-token",
        )
        .unwrap();
        let args = o.to_args();
        assert_eq!(
            args.join(" "),
            "get-token --oidc-issuer-url=https://i.example/r --oidc-client-id=c \
             --oidc-extra-scope=email --grant-type=device-code --oidc-use-access-token"
        );
        let again = GetTokenOptions::parse_flags(&args[1..]).unwrap();
        assert_eq!(again.spec, o.spec);
    }

    #[test]
    fn grant_types_map_to_login_modes() {
        let base = "--oidc-issuer-url https://i.example --oidc-client-id c";
        for (extra, login) in [
            ("", "interactive"),
            ("--username u", "ropc"),
            ("--grant-type authcode-keyboard", "interactive"),
            ("--grant-type password --username u", "ropc"),
            ("--grant-type client-credentials", "spn"),
        ] {
            let o = parse(&format!("{base} {extra}")).unwrap();
            assert_eq!(o.login.as_deref(), Some(login), "{extra}");
        }
        let o = parse(&format!(
            "{base} --listen-address 127.0.0.1:18000 --listen-address 127.0.0.1:8000"
        ))
        .unwrap();
        assert_eq!(o.spec.redirect_url, "http://localhost:18000");
        let o = parse(&format!("{base} --browser-command /usr/bin/firefox")).unwrap();
        assert_eq!(o.browser, Browser::Command("/usr/bin/firefox".into()));
        assert!(
            o.to_args()
                .contains(&"--browser-command=/usr/bin/firefox".to_string())
        );
        let o = parse(&format!("{base} --browser-command x --skip-open-browser")).unwrap();
        assert_eq!(o.browser, Browser::Skip);
        let o = parse(&format!(
            "{base} --oidc-use-access-token --authentication-timeout-sec 60"
        ))
        .unwrap();
        assert!(o.spec.oidc_use_access_token);
        assert_eq!(o.timeout, Some(std::time::Duration::from_secs(60)));
    }

    #[test]
    fn certificate_authorities_are_read_into_pem_and_bounded() {
        use base64::Engine;
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let base = "--oidc-issuer-url https://i.example --oidc-client-id c";
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let (spec, _) = parse(&format!("{base} --certificate-authority-data {}", b64(pem)))
            .unwrap()
            .finish()
            .unwrap();
        assert!(
            spec.oidc_certificate_authority
                .contains("BEGIN CERTIFICATE")
        );
        for (data, why) in [
            (b64("not a certificate"), "holds no PEM certificate"),
            ("%%%".to_string(), "not base64"),
            (b64(&pem.repeat(1000)), "more than 32 KiB"),
        ] {
            let err = parse(&format!("{base} --certificate-authority-data {data}"))
                .unwrap()
                .finish()
                .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let err = parse(&format!(
            "{base} --certificate-authority /nonexistent/ca.pem"
        ))
        .unwrap()
        .finish()
        .unwrap_err();
        assert!(
            err.starts_with("--certificate-authority /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_in_one_line() {
        let base = "--oidc-issuer-url https://i.example --oidc-client-id c";
        for (extra, why) in [
            ("--insecure-skip-tls-verify", "is refused"),
            ("--local-server-cert /c.pem", "not supported"),
            ("--grant-type magic", "--grant-type \"magic\""),
            ("--oidc-pkce-method plain", "use auto, S256 or no"),
            ("--listen-address nowhere", "expected HOST:PORT"),
            ("--server-id x", "--server-id is Azure kubelogin's"),
            ("--nonsense", "unknown or unsupported flag --nonsense"),
        ] {
            let err = parse(&format!("{base} {extra}")).unwrap_err();
            assert!(err.contains(why), "{extra}: {err}");
        }
        let err = parse("--oidc-issuer-url https://i.example").unwrap_err();
        assert!(err.contains("--oidc-client-id is required"), "{err}");
    }
}
