//! An HTTPS fake of the Kubernetes API server, for real kubectl to talk to. kubectl runs exec
//! plugins only for TLS servers, so it serves TLS with a throwaway CA. It accepts exactly the
//! bearer tokens the mock Entra ID signed for the AKS server application (checked in process,
//! or against the keys the mock publishes, for the `fake-apiserver` binary), and answers
//! `/api` and `/version` as a real API server would.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serde_json::json;
use tokio::sync::oneshot;

use crate::jwt::AccessClaims;
use crate::mock_entra::{AKS_SERVER_ID, State};

/// Checks a bearer token for an audience: the claims when the issuer signed it for that
/// audience and it has not expired.
pub type Verifier = dyn Fn(&str, &str) -> Result<AccessClaims, String> + Send + Sync;

/// A running fake API server. Stops when dropped.
pub struct FakeApiServer {
    url: String,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    audiences: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// One request as the fake API server judged it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorized: bool,
    pub subject: Option<String>,
}

/// A CA and a leaf certificate for 127.0.0.1 and localhost, made fresh for each server.
pub(crate) struct Tls {
    pub(crate) ca_pem: String,
    pub(crate) config: rustls::ServerConfig,
}

pub(crate) fn make_tls() -> Tls {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "token-broker test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("der");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .expect("TLS config");
    Tls {
        ca_pem: ca.pem(),
        config,
    }
}

impl FakeApiServer {
    /// Starts on a free loopback port, trusting tokens that `mock` signs.
    pub fn start(mock: Arc<State>) -> Self {
        let verifier: Arc<Verifier> =
            Arc::new(move |token, audience| mock.key.verify(token, audience));
        Self::start_on(verifier, 0).expect("a free port on 127.0.0.1")
    }

    /// Starts as a cluster whose API server runs Kubernetes' OIDC authenticator for `issuer`
    /// (`--oidc-issuer-url`, `--oidc-client-id`): an RS256 token `mock` signed, whose `iss` is
    /// exactly `issuer`, whose `aud` holds `client_id`, not expired; the user is its
    /// `preferred_username` (`--oidc-username-claim`).
    pub fn start_oidc(mock: Arc<State>, issuer: &str, client_id: &str) -> Self {
        let issuer = issuer.to_string();
        let verifier: Arc<Verifier> = Arc::new(move |token, audience| {
            let claims = mock.key.verify_signature(token)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let audience_ok = match &claims["aud"] {
                serde_json::Value::String(a) => a == audience,
                serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            let exp = claims["exp"].as_u64().unwrap_or(0);
            if claims["iss"].as_str() != Some(issuer.as_str()) || !audience_ok || exp <= now {
                return Err("not a token of this cluster's issuer".into());
            }
            let text = |name: &str| claims[name].as_str().unwrap_or_default().to_string();
            Ok(AccessClaims {
                aud: audience.to_string(),
                iss: text("iss"),
                iat: claims["iat"].as_u64().unwrap_or(0),
                nbf: claims["nbf"].as_u64().unwrap_or(0),
                exp,
                tid: String::new(),
                oid: String::new(),
                sub: text("sub"),
                upn: claims["preferred_username"].as_str().map(String::from),
                preferred_username: claims["preferred_username"].as_str().map(String::from),
                name: None,
                azp: text("azp"),
                scp: None,
                ver: String::new(),
                uti: text("jti"),
                cnf: None,
            })
        });
        let server = Self::start_on(verifier, 0).expect("a free port on 127.0.0.1");
        server.accept_audience(client_id);
        server
    }

    /// Starts as an Azure Arc-enabled cluster whose ARM id is `u`: it takes proof-of-possession
    /// tokens only. The wrapper must be signed by the key in its own `cnf.jwk`, that key must be
    /// the one the access token inside is bound to (its `cnf.kid`, an RFC 7638 thumbprint), the
    /// access token one `mock` signed for the audience, `u` this cluster, and `ts` within five
    /// minutes. A bare bearer token is refused.
    pub fn start_pop(mock: Arc<State>, u: &str) -> Self {
        let u = u.to_string();
        let verifier: Arc<Verifier> = Arc::new(move |token, audience| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let parts: Vec<&str> = token.split('.').collect();
            let [header, payload, signature] = parts.as_slice() else {
                return Err("not a JWS".into());
            };
            let signed = format!("{header}.{payload}");
            let decode = |part: &str| -> Result<serde_json::Value, String> {
                let bytes = b64.decode(part).map_err(|e| e.to_string())?;
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())
            };
            let (header, payload) = (decode(header)?, decode(payload)?);
            if header["typ"] != "pop" || header["alg"] != "RS256" {
                return Err("not a PoP token".into());
            }
            let jwk = &payload["cnf"]["jwk"];
            let (n, e) = (
                jwk["n"].as_str().ok_or("no n")?,
                jwk["e"].as_str().ok_or("no e")?,
            );
            let key = ring::signature::RsaPublicKeyComponents {
                n: b64.decode(n).map_err(|e| e.to_string())?,
                e: b64.decode(e).map_err(|e| e.to_string())?,
            };
            key.verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &b64.decode(signature).map_err(|e| e.to_string())?,
            )
            .map_err(|_| "the PoP signature does not verify".to_string())?;
            let thumbprint = b64.encode(<sha2::Sha256 as sha2::Digest>::digest(
                format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#).as_bytes(),
            ));
            let at = payload["at"].as_str().ok_or("no at")?;
            let claims = mock.key.verify(at, audience)?;
            let bound = claims.cnf.as_ref().and_then(|c| c["kid"].as_str());
            if bound != Some(thumbprint.as_str()) {
                return Err("the access token is not bound to the signing key".into());
            }
            if payload["u"].as_str() != Some(u.as_str()) {
                return Err("the PoP token is for another cluster".into());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let ts = payload["ts"].as_u64().unwrap_or(0);
            if ts.abs_diff(now) > 300 {
                return Err("the PoP token is stale".into());
            }
            Ok(claims)
        });
        Self::start_on(verifier, 0).expect("a free port on 127.0.0.1")
    }

    /// Starts on `127.0.0.1:port` (0: any free port), trusting what `verifier` accepts.
    pub fn start_on(verifier: Arc<Verifier>, port: u16) -> std::io::Result<Self> {
        let tls = make_tls();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let url = format!("https://{}", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let audiences = Arc::new(Mutex::new(vec![AKS_SERVER_ID.to_string()]));
        let audiences_for_server = audiences.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let seen_by_server = seen.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept_loop = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        let verifier = verifier.clone();
                        let seen = seen_by_server.clone();
                        let audiences = audiences_for_server.clone();
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let service = hyper::service::service_fn(move |request| {
                                let answer = answer(&request, &*verifier, &seen, &audiences);
                                async move { Ok::<_, Infallible>(answer) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = accept_loop => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(FakeApiServer {
            url,
            ca_pem: tls.ca_pem,
            seen,
            audiences,
            stop: Some(stop),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM) a kubeconfig's cluster must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Also accepts tokens for `audience` (an OIDC-configured cluster's client id, say).
    pub fn accept_audience(&self, audience: &str) {
        self.audiences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(audience.to_string());
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn answer<B>(
    request: &Request<B>,
    verifier: &Verifier,
    seen: &Mutex<Vec<Seen>>,
    audiences: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let audiences = audiences.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let claims = token.and_then(|t| {
        audiences
            .iter()
            .find_map(|audience| verifier(t, audience).ok())
    });
    let path = request.uri().path().to_string();
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        path: path.clone(),
        authorized: claims.is_some(),
        subject: claims
            .as_ref()
            .map(|c| c.upn.clone().unwrap_or_else(|| c.azp.clone())),
    });
    if claims.is_none() {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401
            }),
        );
    }
    match path.as_str() {
        "/api" => reply(
            StatusCode::OK,
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
            }),
        ),
        "/version" => reply(
            StatusCode::OK,
            json!({
                "major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
                "platform": "linux/amd64"
            }),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "the server could not find the requested resource",
                "reason": "NotFound", "code": 404
            }),
        ),
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
