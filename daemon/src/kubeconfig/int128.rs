//! int128/kubelogin (`kubectl oidc-login get-token …`) for an Entra ID issuer.

use broker_proto::kubelogin::GetTokenOptions;

/// int128/kubelogin's flags, for an Entra ID issuer: the access token asked for is for the
/// client itself (`<client id>/.default`), which such clusters accept when their OIDC audience
/// is the client id.
pub(super) fn int128_options(args: &[String]) -> Result<GetTokenOptions, String> {
    let mut issuer = None;
    let mut client_id = None;
    let mut login = "interactive";
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .unwrap_or_default()
        };
        match name {
            "--oidc-issuer-url" => issuer = Some(value()),
            "--oidc-client-id" => client_id = Some(value()),
            "--oidc-client-secret" => {
                return Err(
                    "it signs in with a client secret (a confidential client); token-broker signs \
                     users in as a public client"
                        .into(),
                );
            }
            "--grant-type" => {
                login = match value().as_str() {
                    "authcode" | "auto" | "authcode-keyboard" => "interactive",
                    "device-code" => "devicecode",
                    other => return Err(format!("its grant type {other:?} is not supported")),
                }
            }
            _ => {}
        }
    }
    let issuer = issuer.ok_or("it names no --oidc-issuer-url")?;
    let client_id = client_id.ok_or("it names no --oidc-client-id")?;
    let url =
        url::Url::parse(&issuer).map_err(|_| format!("its issuer {issuer:?} is not a URL"))?;
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let [prefix @ .., tenant, "v2.0"] = segments.as_slice() else {
        return Err(format!(
            "its issuer {issuer} is not an Entra ID v2.0 issuer (…/<tenant>/v2.0)"
        ));
    };
    let mut authority = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        authority.push_str(&format!(":{port}"));
    }
    for part in prefix {
        authority.push('/');
        authority.push_str(part);
    }
    let mut options = GetTokenOptions::default();
    options.spec.server_id = client_id.clone();
    options.spec.client_id = client_id;
    options.spec.tenant_id = tenant.to_string();
    match known_environment(&authority) {
        Some(environment) => options.spec.environment = environment.into(),
        None => options.spec.authority_host = format!("{authority}/"),
    }
    options.login = Some(login.into());
    Ok(options)
}

fn known_environment(authority: &str) -> Option<&'static str> {
    match authority {
        "https://login.microsoftonline.com" => Some("AzurePublicCloud"),
        "https://login.microsoftonline.us" => Some("AzureUSGovernmentCloud"),
        "https://login.chinacloudapi.cn" | "https://login.partner.microsoftonline.cn" => {
            Some("AzureChinaCloud")
        }
        _ => None,
    }
}
