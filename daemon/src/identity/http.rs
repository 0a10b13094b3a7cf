//! The one HTTP client brokerd uses to talk to identity providers.
//!
//! It plugs into the `oauth2` crate as its transport and adds what a long-running daemon needs
//! and `oauth2`'s own reqwest glue lacks: a timeout on every call, a cap on answer size, and
//! server faults (5xx, 429 with Retry-After) reported as transport errors so that they are
//! classified as transient instead of being parsed as OAuth errors.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, unix_seconds};

use oauth2::{HttpRequest, HttpResponse};

/// Identity provider answers are a few kilobytes; anything far larger is not one.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("{host} did not answer in time")]
    Timeout { host: String },
    #[error("{host} answered HTTP {status}")]
    ServerFault {
        host: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{host} sent an answer larger than {limit} bytes")]
    TooLarge { host: String, limit: usize },
    #[error("invalid request to the identity provider: {0}")]
    BadRequest(String),
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
}

/// HTTPS client for identity providers: rustls, the OS trust store, bounded in time and size.
#[derive(Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
    max_answer: usize,
    clock: Arc<dyn Clock>,
    /// How far each host's clock is ahead of ours (seconds; negative: behind), from the
    /// `Date` of its last answer.
    skews: Arc<Mutex<HashMap<String, i64>>>,
}

impl IdpHttp {
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, HttpError> {
        Ok(IdpHttp {
            client: Self::client(Vec::new())?,
            max_answer: MAX_ANSWER_BYTES,
            clock,
            skews: Arc::default(),
        })
    }

    /// The same client trusting `pem`'s certificates besides the system's (an issuer behind
    /// a private CA, int128's `--certificate-authority`). Clock skews stay shared.
    pub fn with_roots(&self, pem: &str) -> Result<Self, HttpError> {
        let roots = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| HttpError::Setup(format!("the issuer's certificate authority: {e}")))?;
        Ok(IdpHttp {
            client: Self::client(roots)?,
            max_answer: self.max_answer,
            clock: self.clock.clone(),
            skews: self.skews.clone(),
        })
    }

    fn client(extra_roots: Vec<reqwest::Certificate>) -> Result<reqwest::Client, HttpError> {
        install_crypto_provider();
        reqwest::Client::builder()
            .tls_certs_merge(extra_roots)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A token endpoint never redirects; following one could send a grant elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // Reuse matters within a burst of refreshes, not across the half hour between
            // them; an idle connection kept 90 s (the default) costs wake-ups to evict.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("token-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Setup(setup_failure(&e)))
    }

    /// How far `host`'s clock was ahead of this machine's at its last answer, in seconds
    /// (within the second or so a `Date` header and the trip take); 0 when it never said.
    pub fn skew(&self, host: &str) -> i64 {
        self.skews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    fn note_date(&self, host: &str, headers: &http::HeaderMap) {
        let Some(date) = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let skew = unix_seconds(date).saturating_sub(unix_seconds(self.clock.now()));
        self.skews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), skew);
    }

    /// Sends `request` and reads the answer, within the time and size limits, whatever its
    /// status.
    pub async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let request = reqwest::Request::try_from(request)
            .map_err(|e| HttpError::BadRequest(e.without_url().to_string()))?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| transport_error(&host, e))?;
        if let Some(length) = response.content_length()
            && length > self.max_answer as u64
        {
            return Err(HttpError::TooLarge {
                host,
                limit: self.max_answer,
            });
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&host, e))?
        {
            if body.len() + chunk.len() > self.max_answer {
                return Err(HttpError::TooLarge {
                    host,
                    limit: self.max_answer,
                });
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError::BadRequest(e.to_string()))
    }

    /// [`IdpHttp::fetch`] for the `oauth2` crate: server faults become errors, so that they are
    /// classified as transient instead of being parsed as OAuth errors.
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let response = self.fetch(request).await?;
        self.note_date(&host, response.headers());
        let status = response.status();
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(HttpError::ServerFault {
                host,
                status: status.as_u16(),
                retry_after: retry_after(response.headers()),
            });
        }
        Ok(response)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// rustls needs one process-wide crypto provider; ring builds with nothing but a C compiler.
fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn transport_error(host: &str, error: reqwest::Error) -> HttpError {
    let host = host.to_string();
    if error.is_timeout() {
        return HttpError::Timeout { host };
    }
    // The URL is left out: it adds nothing the host does not say.
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    HttpError::Unreachable { host, reason }
}

/// Why the client could not be built, with its causes; a bad trust store override is the usual
/// one, so it is named.
fn setup_failure(error: &reqwest::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    for name in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(value) = std::env::var_os(name) {
            reason.push_str(&format!(
                " (is {name}={} a readable PEM bundle?)",
                value.to_string_lossy()
            ));
        }
    }
    reason
}

/// `Retry-After` in its delay-seconds form; the HTTP-date form is rare from IdPs and ignored.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
