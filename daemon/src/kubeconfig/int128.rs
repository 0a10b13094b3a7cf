//! int128/kubelogin (`kubectl oidc-login get-token …`), for Entra ID and any other issuer.

use broker_proto::kubelogin::GetTokenOptions;

/// int128/kubelogin's flags as a session. For an Entra ID v2.0 issuer (`…/<tenant>/v2.0`) the
/// session is an Entra one: the access token asked for is for the client itself
/// (`<client id>/.default`), which such clusters accept when their OIDC audience is the client
/// id, and it shares the refresh machinery of every Entra session. Any other issuer keeps
/// int128's flags as they are: broker-shim reads them.
pub(super) fn int128_options(args: &[String]) -> Result<GetTokenOptions, String> {
    let generic = GetTokenOptions::parse_flags(args)?;
    if generic.spec.oidc_issuer_url.is_empty() {
        return Err("it names no --oidc-issuer-url".into());
    }
    let Some((authority, tenant)) = entra_issuer(&generic.spec.oidc_issuer_url)? else {
        return Ok(generic);
    };
    if !generic.credentials.client_secret.is_empty() {
        return Err(
            "it signs in to Entra ID with a client secret (a confidential client); \
             token-broker signs Entra users in as a public client"
                .into(),
        );
    }
    let login = match generic.login.as_deref() {
        Some(login @ ("interactive" | "devicecode")) => login,
        _ => return Err("its grant type is not supported for an Entra ID issuer".into()),
    };
    let client_id = generic.spec.client_id.clone();
    let mut options = GetTokenOptions::default();
    options.spec.server_id = client_id.clone();
    options.spec.client_id = client_id;
    options.spec.tenant_id = tenant;
    match known_environment(&authority) {
        Some(environment) => options.spec.environment = environment.into(),
        None => options.spec.authority_host = format!("{authority}/"),
    }
    options.login = Some(login.into());
    Ok(options)
}

/// The authority and tenant of an Entra ID v2.0 issuer (`{authority}/<tenant>/v2.0`); `None`
/// for any other issuer.
fn entra_issuer(issuer: &str) -> Result<Option<(String, String)>, String> {
    let url = url::Url::parse(issuer).map_err(|_| format!("its issuer {issuer:?} is not a URL"))?;
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let [prefix @ .., tenant, "v2.0"] = segments.as_slice() else {
        return Ok(None);
    };
    let mut authority = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        authority.push_str(&format!(":{port}"));
    }
    for part in prefix {
        authority.push('/');
        authority.push_str(part);
    }
    Ok(Some((authority, tenant.to_string())))
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
