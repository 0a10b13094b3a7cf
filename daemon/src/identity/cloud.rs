//! Which identity provider a session talks to: a cloud environment name or an explicit
//! authority host, resolved to one validated base URL.

use std::fmt;
use std::net::IpAddr;

use url::Url;

/// The environment names kubelogin accepts (case-insensitive) and the authority host each means.
const ENVIRONMENTS: &[(&[&str], &str)] = &[
    (
        &["AzurePublicCloud", "AzureCloud", "AzurePublic"],
        "https://login.microsoftonline.com",
    ),
    (
        &["AzureUSGovernmentCloud", "AzureUSGovernment"],
        "https://login.microsoftonline.us",
    ),
    (&["AzureChinaCloud"], "https://login.chinacloudapi.cn"),
];

/// The default environment, as for kubelogin.
pub const DEFAULT_ENVIRONMENT: &str = "AzurePublicCloud";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthorityError {
    #[error(
        "unknown environment {name:?}: use AzurePublicCloud, AzureChinaCloud or \
         AzureUSGovernmentCloud, or give --authority-host"
    )]
    UnknownEnvironment { name: String },
    #[error("authority host {value:?} is not a URL: {reason}")]
    NotAUrl { value: String, reason: String },
    #[error(
        "authority host {value:?} must use https (http is accepted only for localhost and \
         loopback addresses)"
    )]
    InsecureScheme { value: String },
    #[error("authority host {value:?} must not carry a query, fragment or user name")]
    ExtraParts { value: String },
}

/// A validated authority: scheme, host, optional port and path prefix, with no trailing slash.
/// Endpoints are `{authority}/{tenant}/oauth2/v2.0/...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authority(String);

impl Authority {
    /// Resolves kubelogin's `--environment` / `--authority-host` pair; the host wins when given.
    pub fn resolve(environment: &str, authority_host: &str) -> Result<Self, AuthorityError> {
        if !authority_host.trim().is_empty() {
            return Self::from_host(authority_host.trim());
        }
        Self::from_environment(environment)
    }

    pub fn from_environment(name: &str) -> Result<Self, AuthorityError> {
        let name = name.trim();
        let name = if name.is_empty() {
            DEFAULT_ENVIRONMENT
        } else {
            name
        };
        ENVIRONMENTS
            .iter()
            .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, host)| Authority((*host).to_string()))
            .ok_or_else(|| AuthorityError::UnknownEnvironment {
                name: name.to_string(),
            })
    }

    pub fn from_host(value: &str) -> Result<Self, AuthorityError> {
        let url = Url::parse(value).map_err(|e| AuthorityError::NotAUrl {
            value: value.to_string(),
            reason: e.to_string(),
        })?;
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(AuthorityError::ExtraParts {
                value: value.to_string(),
            });
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(AuthorityError::InsecureScheme {
                    value: value.to_string(),
                });
            }
            other => {
                return Err(AuthorityError::NotAUrl {
                    value: value.to_string(),
                    reason: format!("scheme {other:?} is not http(s)"),
                });
            }
        }
        if url.host().is_none() {
            return Err(AuthorityError::NotAUrl {
                value: value.to_string(),
                reason: "no host".to_string(),
            });
        }
        let text = url.as_str().trim_end_matches('/').to_string();
        Ok(Authority(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `host[:port]`, as an HTTP request's authority names it.
    pub fn host(&self) -> String {
        url::Url::parse(&self.0)
            .ok()
            .and_then(|url| {
                let host = url.host_str()?.to_string();
                Some(match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
            .unwrap_or_default()
    }

    /// `{authority}/{tenant}/oauth2/v2.0/{endpoint}`.
    pub fn endpoint(&self, tenant: &str, endpoint: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/{endpoint}", self.0)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_are_case_insensitive_with_kubelogin_aliases() {
        let public = Authority::from_environment("azurepubliccloud").unwrap();
        assert_eq!(public.as_str(), "https://login.microsoftonline.com");
        assert_eq!(Authority::from_environment("AzureCloud").unwrap(), public);
        assert_eq!(Authority::from_environment("").unwrap(), public);
        assert_eq!(
            Authority::from_environment("AZUREUSGOVERNMENTCLOUD")
                .unwrap()
                .as_str(),
            "https://login.microsoftonline.us"
        );
        assert_eq!(
            Authority::from_environment("AzureChinaCloud")
                .unwrap()
                .as_str(),
            "https://login.chinacloudapi.cn"
        );
    }

    #[test]
    fn unknown_environment_is_an_error_not_a_silent_fallback() {
        assert!(matches!(
            Authority::from_environment("AzureGermanCloud"),
            Err(AuthorityError::UnknownEnvironment { .. })
        ));
    }

    #[test]
    fn authority_host_wins_and_is_normalised() {
        let a =
            Authority::resolve("AzureChinaCloud", "https://login.microsoftonline.com/").unwrap();
        assert_eq!(a.as_str(), "https://login.microsoftonline.com");
        assert_eq!(
            a.endpoint("t1", "token"),
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        let stack = Authority::from_host("https://adfs.example/adfs/").unwrap();
        assert_eq!(stack.as_str(), "https://adfs.example/adfs");
    }

    #[test]
    fn http_only_for_loopback() {
        for ok in [
            "http://localhost:8080/",
            "http://127.0.0.1:1/",
            "http://[::1]:9/",
            "http://127.3.4.5",
        ] {
            assert!(Authority::from_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://login.microsoftonline.com/",
            "http://10.0.0.1/",
            "http://localhost.evil.example/",
        ] {
            assert!(
                matches!(
                    Authority::from_host(bad),
                    Err(AuthorityError::InsecureScheme { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_junk() {
        assert!(Authority::from_host("login.microsoftonline.com").is_err());
        assert!(Authority::from_host("ftp://x/").is_err());
        assert!(Authority::from_host("https://x/?a=b").is_err());
        assert!(Authority::from_host("https://user@x/").is_err());
    }
}
