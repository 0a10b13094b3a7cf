//! The listener on localhost that receives the browser's redirect after an interactive sign-in.
//!
//! It accepts the one redirect whose `state` matches the login in progress and answers anything
//! else with an error page, so a stray or forged request can neither finish nor break the login.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::identity::IdentityError;

/// How long one browser connection may take to send its request.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the browser brought back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Redirect {
    Code(String),
    Denied { error: String, description: String },
}

pub(super) struct Loopback {
    listeners: Vec<TcpListener>,
    port: u16,
    /// The redirect URI the user chose (`--redirect-url`), parsed and as given (Entra
    /// compares it as text with the app's registered ones).
    chosen: Option<(url::Url, String)>,
}

struct Waiter {
    /// The path the browser is sent back to.
    path: String,
    state: String,
    outcome: Mutex<Option<oneshot::Sender<Redirect>>>,
}

impl Loopback {
    /// Listens on 127.0.0.1 on a free port and, where IPv6 works, on [::1] on the same port:
    /// browsers may resolve `localhost` to either.
    pub(super) async fn bind() -> std::io::Result<Self> {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = v4.local_addr()?.port();
        let mut listeners = vec![v4];
        match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
            Ok(v6) => listeners.push(v6),
            Err(e) => tracing::debug!("no IPv6 loopback listener on port {port}: {e}"),
        }
        Ok(Loopback {
            listeners,
            port,
            chosen: None,
        })
    }

    /// Listens where `redirect` (`--redirect-url`, checked to be http on a loopback host with
    /// a port) points: for an app registration that allows only that URI, or a port a
    /// firewall or a container's port mapping lets through. `localhost` gets both families.
    pub(super) async fn bind_at(given: &str) -> std::io::Result<Self> {
        let redirect = url::Url::parse(given)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let port = redirect.port().unwrap_or(80);
        let mut listeners = Vec::new();
        let mut last_error = None;
        let addresses: &[std::net::IpAddr] = match redirect.host() {
            Some(url::Host::Ipv4(ip)) => &[std::net::IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => &[std::net::IpAddr::V6(ip)],
            _ => &[
                std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
                std::net::IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        };
        for address in addresses {
            match TcpListener::bind((*address, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(e) => last_error = Some(e),
            }
        }
        if listeners.is_empty() {
            let e = last_error.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {redirect} (--redirect-url): {e}"),
            ));
        }
        Ok(Loopback {
            listeners,
            port,
            chosen: Some((redirect.clone(), given.to_string())),
        })
    }

    /// The chosen redirect URI as given; else one on our port (Entra matches loopback
    /// redirect URIs without their port, so any free port will do).
    pub(super) fn redirect_uri(&self) -> String {
        match &self.chosen {
            Some((_, given)) => given.clone(),
            None => format!("http://localhost:{}", self.port),
        }
    }

    /// Waits for the redirect that carries `state`, at most `timeout`.
    pub(super) async fn wait(
        self,
        state: &str,
        timeout: Duration,
    ) -> Result<Redirect, IdentityError> {
        let (tx, rx) = oneshot::channel();
        let path = self
            .chosen
            .as_ref()
            .map(|(url, _)| url.path().to_string())
            .unwrap_or_else(|| "/".into());
        let waiter = Arc::new(Waiter {
            path,
            state: state.to_string(),
            outcome: Mutex::new(Some(tx)),
        });
        let mut acceptors = JoinSet::new();
        for listener in self.listeners {
            let waiter = waiter.clone();
            acceptors.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            tokio::spawn(serve(stream, waiter.clone()));
                        }
                        Err(e) => tracing::debug!("loopback accept failed: {e}"),
                    }
                }
            });
        }
        let outcome = tokio::time::timeout(timeout, rx).await;
        acceptors.abort_all();
        match outcome {
            Ok(Ok(redirect)) => Ok(redirect),
            Ok(Err(_)) => Err(IdentityError::LoginFailed(
                "the browser sign-in was interrupted".into(),
            )),
            Err(_) => Err(IdentityError::LoginFailed(format!(
                "no browser sign-in arrived within {} s",
                timeout.as_secs()
            ))),
        }
    }
}

async fn serve(stream: TcpStream, waiter: Arc<Waiter>) {
    let service = hyper::service::service_fn(move |request| {
        let waiter = waiter.clone();
        async move { Ok::<_, Infallible>(answer(&request, &waiter)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        tracing::debug!("loopback connection failed: {e}");
    }
}

fn answer<B>(request: &Request<B>, waiter: &Waiter) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    if request.uri().path() != waiter.path {
        return page(StatusCode::NOT_FOUND, "Not found.");
    }
    let query = request.uri().query().unwrap_or("");
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    if param("state").as_deref() != Some(waiter.state.as_str()) {
        tracing::warn!("ignored a redirect to the login listener whose state does not match");
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in answer does not belong to the login token-broker is waiting for.",
        );
    }
    let redirect = match (param("code"), param("error")) {
        (Some(code), _) if !code.is_empty() => Redirect::Code(code),
        // The browser brings the IdP's words: printable ones only go further.
        (_, Some(error)) => Redirect::Denied {
            error: broker_proto::text::printable(&error).into_owned(),
            description: broker_proto::text::printable(
                &param("error_description").unwrap_or_default(),
            )
            .into_owned(),
        },
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "The sign-in answer carries no code.",
            );
        }
    };
    let text = match &redirect {
        Redirect::Code(_) => "Signed in to token-broker. You can close this tab.".to_string(),
        Redirect::Denied { error, description } => {
            format!("Sign-in failed: {error}: {description}")
        }
    };
    let sender = waiter
        .outcome
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match sender {
        Some(sender) => {
            let _ = sender.send(redirect);
            page(StatusCode::OK, &text)
        }
        None => page(StatusCode::CONFLICT, "This sign-in has already finished."),
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>token-broker</title></head>\
         <body><p>{}</p></body></html>",
        escape_html(text)
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, path_and_query: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        s.write_all(format!("GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        (status, buf)
    }

    #[tokio::test]
    async fn only_the_matching_state_finishes_the_login() {
        let loopback = Loopback::bind().await.unwrap();
        let port = loopback.port;
        assert_eq!(loopback.redirect_uri(), format!("http://localhost:{port}"));
        let waiting = tokio::spawn(loopback.wait("s3cr3t", Duration::from_secs(10)));

        assert_eq!(get(port, "/favicon.ico").await.0, 404);
        assert_eq!(get(port, "/?code=forged&state=wrong").await.0, 400);
        assert_eq!(get(port, "/?code=forged").await.0, 400);
        let (status, body) = get(port, "/?code=the-code&state=s3cr3t").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            Redirect::Code("the-code".into())
        );
    }

    #[tokio::test]
    async fn an_error_redirect_is_reported_and_escaped() {
        let loopback = Loopback::bind().await.unwrap();
        let port = loopback.port;
        let waiting = tokio::spawn(loopback.wait("st", Duration::from_secs(10)));
        let (status, body) = get(
            port,
            "/?error=access_denied&error_description=%3Cb%3Eno%3C/b%3E&state=st",
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains("&lt;b&gt;no"), "{body}");
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            Redirect::Denied {
                error: "access_denied".into(),
                description: "<b>no</b>".into()
            }
        );
    }

    #[tokio::test]
    async fn times_out_with_a_clear_error() {
        let loopback = Loopback::bind().await.unwrap();
        let err = loopback
            .wait("st", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no browser sign-in arrived"),
            "{err}"
        );
    }
}
