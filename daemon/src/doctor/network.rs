//! How brokerd reaches identity providers: through which proxy, trusting which certificates,
//! and whether each provider answers and agrees with this machine's clock.

use std::time::{Duration, SystemTime};

use super::{Check, Env};
use crate::clock::Clock;
use crate::identity::cloud::Authority;
use crate::identity::http::IdpHttp;

/// The variables reqwest (and so brokerd) takes its proxy from, in the order it reads them.
const PROXY_VARIABLES: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];
const NO_PROXY_VARIABLES: &[&str] = &["NO_PROXY", "no_proxy"];

/// Entra accepts a few minutes of skew; beyond that tokens look expired or not yet valid.
const SKEW_FAIL: Duration = Duration::from_secs(300);
const SKEW_WARN: Duration = Duration::from_secs(60);

/// CA bundles of the common Linux distributions, where rustls-platform-verifier (through
/// rustls-native-certs) finds them unless SSL_CERT_FILE or SSL_CERT_DIR say otherwise.
#[cfg(not(target_os = "macos"))]
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn set(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// A proxy URL with its password (or a whole unparseable userinfo) replaced by `***`.
pub fn mask_credentials(value: &str) -> String {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    if let Ok(mut url) = url::Url::parse(&with_scheme) {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
            return url.to_string().trim_end_matches('/').to_string();
        }
        return value.to_string();
    }
    match (value.find("://"), value.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}***{}", &value[..start + 3], &value[at..])
        }
        (None, Some(at)) => format!("***{}", &value[at..]),
        _ => value.to_string(),
    }
}

/// The proxy variables in brokerd's environment, and whether each is a usable URL.
pub fn proxy(env: Env<'_>) -> Check {
    let mut shown = Vec::new();
    for name in PROXY_VARIABLES {
        let Some(value) = set(env, name) else {
            continue;
        };
        let masked = mask_credentials(&value);
        let with_scheme = if value.contains("://") {
            value.clone()
        } else {
            format!("http://{value}")
        };
        let usable = url::Url::parse(&with_scheme).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h") && u.host().is_some()
        });
        if usable.is_none() {
            return Check::fail(
                "proxy",
                format!("{name} is not a proxy URL: {masked}"),
                format!("set {name} to http://HOST:PORT (or unset it)"),
            );
        }
        shown.push(format!("{name}={masked}"));
    }
    if shown.is_empty() {
        return Check::pass("proxy", "no proxy variables: brokerd connects directly");
    }
    for name in NO_PROXY_VARIABLES {
        if let Some(value) = set(env, name) {
            shown.push(format!("{name}={value}"));
        }
    }
    Check::pass("proxy", format!("brokerd uses {}", shown.join(", ")))
}

/// Where brokerd's TLS roots come from, and whether an override points at something real.
pub fn trust_store(env: Env<'_>) -> Check {
    if let Some(file) = set(env, "SSL_CERT_FILE") {
        return match std::fs::read(&file) {
            Ok(bytes) if contains_certificate(&bytes) => Check::pass(
                "trust_store",
                format!("SSL_CERT_FILE={file}, with the OS trust store"),
            ),
            Ok(_) => Check::fail(
                "trust_store",
                format!("SSL_CERT_FILE={file} holds no PEM certificate"),
                "point SSL_CERT_FILE at a PEM bundle of CA certificates, or unset it",
            ),
            Err(e) => Check::fail(
                "trust_store",
                format!("SSL_CERT_FILE={file} cannot be read: {e}"),
                "point SSL_CERT_FILE at a PEM bundle of CA certificates, or unset it",
            ),
        };
    }
    if let Some(dirs) = set(env, "SSL_CERT_DIR") {
        let missing: Vec<String> = std::env::split_paths(&dirs)
            .filter(|d| !d.is_dir())
            .map(|d| d.display().to_string())
            .collect();
        return if missing.is_empty() {
            Check::pass(
                "trust_store",
                format!("SSL_CERT_DIR={dirs}, with the OS trust store"),
            )
        } else {
            Check::fail(
                "trust_store",
                format!(
                    "SSL_CERT_DIR names missing directories: {}",
                    missing.join(", ")
                ),
                "fix SSL_CERT_DIR, or unset it",
            )
        };
    }
    system_trust_store()
}

#[cfg(target_os = "macos")]
fn system_trust_store() -> Check {
    Check::pass("trust_store", "the macOS Keychain's trust settings")
}

#[cfg(not(target_os = "macos"))]
fn system_trust_store() -> Check {
    match SYSTEM_BUNDLES
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
    {
        Some(bundle) => Check::pass("trust_store", format!("the OS trust store ({bundle})")),
        None => Check::fail(
            "trust_store",
            "no CA bundle in any of the usual places, so no HTTPS server can be trusted",
            "install the CA certificates (Debian/Ubuntu: `apt install ca-certificates`), or set \
             SSL_CERT_FILE",
        ),
    }
}

fn contains_certificate(bytes: &[u8]) -> bool {
    bytes
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
}

/// Reaches each authority and compares its clock with `clock`.
pub async fn identity_providers(authorities: &[Authority], clock: &dyn Clock) -> Vec<Check> {
    // Its own clock reading does not matter here: the Date is compared with `clock` below.
    let http = match IdpHttp::new(std::sync::Arc::new(crate::clock::SystemClock)) {
        Ok(http) => http,
        Err(e) => {
            return vec![Check::fail(
                "idp",
                format!("cannot set up HTTPS: {e}"),
                "check the trust store and proxy settings above",
            )];
        }
    };
    let mut checks = Vec::new();
    for authority in authorities {
        checks.extend(identity_provider(&http, authority, clock).await);
    }
    checks
}

async fn identity_provider(http: &IdpHttp, authority: &Authority, clock: &dyn Clock) -> Vec<Check> {
    // Every Entra authority serves the `common` tenant's discovery document; any other OpenID
    // Connect issuer serves its own under its URL, which is tried when the first is not found.
    let candidates = [
        format!("{authority}/common/v2.0/.well-known/openid-configuration"),
        format!("{authority}/.well-known/openid-configuration"),
    ];
    let (sent, started, response) = 'answered: {
        for (i, url) in candidates.iter().enumerate() {
            let request = match http::Request::get(url).body(Vec::new()) {
                Ok(request) => request,
                Err(e) => {
                    return vec![Check::fail(
                        "idp",
                        format!("{authority} is not a usable URL: {e}"),
                        "fix the authority host in the kubeconfig or profile",
                    )];
                }
            };
            let sent = clock.now();
            let started = std::time::Instant::now();
            let response = match http.fetch(request).await {
                Ok(response) => response,
                Err(e) => {
                    let reason = e.to_string();
                    let fix = if reason.contains("certificate") {
                        "a proxy that inspects TLS? add its CA to the OS trust store, or point \
                     SSL_CERT_FILE at a bundle that includes it"
                    } else {
                        "check the network, DNS and proxy: brokerd's own environment is what counts \
                     (for a systemd user service, `systemctl --user set-environment \
                     HTTPS_PROXY=...`), and NO_PROXY must not cover the authority"
                    };
                    return vec![Check::fail("idp", reason, fix)];
                }
            };
            let last = i + 1 == candidates.len();
            if response.status() == http::StatusCode::NOT_FOUND && !last {
                continue;
            }
            break 'answered (sent, started, response);
        }
        // Not reached: the last candidate's answer, whatever it is, ends the loop.
        return vec![Check::fail(
            "idp",
            format!("{authority} has no discovery document"),
            "check the authority host: it should be an Entra ID (or OIDC) authority",
        )];
    };
    let took = started.elapsed();
    let status = response.status();
    let reached = if status.is_success() {
        Check::pass(
            "idp",
            format!("{authority} answered in {} ms", took.as_millis().max(1)),
        )
    } else if status.is_server_error() || status.as_u16() == 429 {
        Check::warn(
            "idp",
            format!("{authority} answered HTTP {}", status.as_u16()),
            "the identity provider is having trouble; brokerd retries refreshes with backoff",
        )
    } else {
        Check::warn(
            "idp",
            format!(
                "{authority} answered HTTP {} for its discovery document",
                status.as_u16()
            ),
            "check the authority host: it should be an Entra ID (or OIDC) authority",
        )
    };
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok());
    // The server's clock read somewhere between sending and receiving; its Date header is cut
    // to the second, so half a second on average is lost.
    let ours = sent + took / 2;
    let clock_check = match date {
        None => Check::warn(
            "clock",
            format!("{authority} sent no Date header, so the clock was not compared"),
            "nothing to do unless tokens are refused as expired or not yet valid",
        ),
        Some(theirs) => skew_check(authority, ours, theirs + Duration::from_millis(500)),
    };
    vec![reached, clock_check]
}

fn skew_check(authority: &Authority, ours: SystemTime, theirs: SystemTime) -> Check {
    let (skew, direction) = match ours.duration_since(theirs) {
        Ok(ahead) => (ahead, "ahead of"),
        Err(behind) => (behind.duration(), "behind"),
    };
    // The estimate is good to a second or so: say it no finer than that.
    let seconds = (skew.as_millis() + 500) / 1000;
    let amount = if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("about {} min", (seconds + 30) / 60)
    };
    let fix = "turn on time synchronisation: `timedatectl set-ntp true` (Linux), or System \
               Settings > General > Date & Time (macOS)";
    if skew >= SKEW_FAIL {
        Check::fail(
            "clock",
            format!(
                "this machine's clock is {amount} {direction} {authority}'s: tokens will look \
                 expired or not yet valid"
            ),
            fix,
        )
    } else if skew >= SKEW_WARN {
        Check::warn(
            "clock",
            format!("this machine's clock is {amount} {direction} {authority}'s"),
            fix,
        )
    } else {
        Check::pass(
            "clock",
            format!("within {seconds} s of {authority}'s clock"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Sync {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn proxy_passwords_are_masked() {
        assert_eq!(
            mask_credentials("http://alice:s3cret@proxy.corp:3128"),
            "http://alice:***@proxy.corp:3128"
        );
        assert_eq!(mask_credentials("proxy.corp:3128"), "proxy.corp:3128");
        assert_eq!(
            mask_credentials("http://al ice:s3cret@pro xy"),
            "http://***@pro xy"
        );
        let check = proxy(&env(&[
            ("HTTPS_PROXY", "http://alice:s3cret@proxy.corp:3128"),
            ("NO_PROXY", "localhost,.corp"),
        ]));
        assert_eq!(check.level, super::super::Level::Pass);
        assert!(!check.summary.contains("s3cret"), "{}", check.summary);
        assert!(check.summary.contains("NO_PROXY=localhost,.corp"));
    }

    #[test]
    fn a_proxy_that_is_not_a_url_fails_without_echoing_its_password() {
        let check = proxy(&env(&[("https_proxy", "http://bob:hunter2@/")]));
        assert_eq!(check.level, super::super::Level::Fail);
        assert!(check.summary.starts_with("https_proxy is not a proxy URL"));
        assert!(!check.summary.contains("hunter2"), "{}", check.summary);
    }

    #[test]
    fn skew_thresholds() {
        let authority = Authority::from_host("https://login.microsoftonline.com").unwrap();
        let now = SystemTime::now();
        let level = |secs: u64| skew_check(&authority, now + Duration::from_secs(secs), now).level;
        assert_eq!(level(3), super::super::Level::Pass);
        assert_eq!(level(90), super::super::Level::Warn);
        assert_eq!(level(600), super::super::Level::Fail);
        let behind = skew_check(&authority, now, now + Duration::from_secs(600));
        assert!(
            behind.summary.contains("about 10 min behind"),
            "{}",
            behind.summary
        );
    }
}
