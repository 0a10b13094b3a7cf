//! The mock Entra ID answers as the reference says the real service does.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use broker_tests::harness::{DEADLINE, binaries};
use broker_tests::mock_entra::{
    AKS_CLIENT_ID, AKS_SERVER_ID, Fault, MockConfig, MockEntra, TENANT_ID,
};
use serde_json::Value;
use sha2::Digest;

struct Http {
    agent: ureq::Agent,
}

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Http {
    fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Http {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn answer(response: ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.into_body().read_to_string().unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn get(&self, url: &str) -> Answer {
        Self::answer(self.agent.get(url).call().expect("GET"))
    }

    fn post(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        Self::answer(
            self.agent
                .post(url)
                .send_form(form.iter().copied())
                .expect("POST"),
        )
    }
}

fn token_url(mock: &MockEntra) -> String {
    format!("{}/{TENANT_ID}/oauth2/v2.0/token", mock.base_url())
}

fn scope() -> String {
    format!("{AKS_SERVER_ID}/.default offline_access openid profile")
}

fn start_device_code(mock: &MockEntra, http: &Http) -> Value {
    let answer = http.post(
        &format!("{}/{TENANT_ID}/oauth2/v2.0/devicecode", mock.base_url()),
        &[("client_id", AKS_CLIENT_ID), ("scope", &scope())],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[test]
fn openid_configuration_and_keys_describe_the_endpoints() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    let answer = http.get(&format!(
        "{}/{TENANT_ID}/v2.0/.well-known/openid-configuration",
        mock.base_url()
    ));
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "application/json; charset=utf-8"
    );
    let doc = answer.json();
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/{TENANT_ID}/oauth2/v2.0/token", mock.base_url())
    );
    assert_eq!(
        doc["issuer"],
        format!("{}/{TENANT_ID}/v2.0", mock.base_url())
    );
    let common = http
        .get(&format!(
            "{}/common/v2.0/.well-known/openid-configuration",
            mock.base_url()
        ))
        .json();
    assert_eq!(
        common["issuer"],
        format!("{}/{{tenantid}}/v2.0", mock.base_url())
    );
    let keys = http
        .get(&format!(
            "{}/{TENANT_ID}/discovery/v2.0/keys",
            mock.base_url()
        ))
        .json();
    assert_eq!(keys["keys"][0]["kty"], "RSA");
}

#[test]
fn the_device_flow_polls_pending_then_redeems_with_either_grant_spelling() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    for grant_type in [
        "urn:ietf:params:oauth:grant-type:device_code",
        "device_code",
    ] {
        let started = start_device_code(&mock, &http);
        assert_eq!(started["interval"], 5);
        assert_eq!(started["expires_in"], 900);
        assert!(started.get("verification_uri_complete").is_none());
        let message = started["message"].as_str().unwrap();
        assert!(message.contains(started["user_code"].as_str().unwrap()));
        let poll = || {
            http.post(
                &token_url(&mock),
                &[
                    ("grant_type", grant_type),
                    ("client_id", AKS_CLIENT_ID),
                    ("device_code", started["device_code"].as_str().unwrap()),
                ],
            )
        };
        let pending = poll();
        assert_eq!(pending.status, 400);
        let body = pending.json();
        assert_eq!(body["error"], "authorization_pending");
        assert_eq!(body["error_codes"][0], 70016);
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("AADSTS70016: "), "{description}");
        assert!(description.contains(" Trace ID: "), "{description}");
        // "YYYY-MM-DD HH:MM:SSZ"
        let timestamp = body["timestamp"].as_str().unwrap();
        assert_eq!(timestamp.len(), 20, "{timestamp}");
        assert_eq!(&timestamp[10..11], " ");

        assert!(mock.approve(started["user_code"].as_str().unwrap()));
        let done = poll();
        assert_eq!(done.status, 200, "{}", done.body);
        assert_eq!(done.headers["cache-control"], "no-store, no-cache");
        let tokens = done.json();
        assert_eq!(tokens["token_type"], "Bearer");
        assert!(tokens["expires_in"].is_u64());
        assert!(tokens["refresh_token"].is_string());
        assert!(tokens["id_token"].is_string());
        let claims = mock
            .verify(tokens["access_token"].as_str().unwrap(), AKS_SERVER_ID)
            .unwrap();
        assert_eq!(claims.tid, TENANT_ID);
        assert_eq!(claims.azp, AKS_CLIENT_ID);
        // A device code is single use.
        assert_eq!(poll().json()["error"], "bad_verification_code");
    }
}

fn authorize(mock: &MockEntra, http: &Http, challenge: &str, redirect: &str) -> Answer {
    let mut url = url::Url::parse(&format!(
        "{}/{TENANT_ID}/oauth2/v2.0/authorize",
        mock.base_url()
    ))
    .unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", AKS_CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", &scope())
        .append_pair("state", "st4te")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    http.get(url.as_str())
}

#[test]
fn authorization_code_with_pkce_is_checked_and_single_use() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    let verifier = "a-verifier-of-at-least-forty-three-characters-long";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = "http://localhost:43123";
    let answer = authorize(&mock, &http, &challenge, redirect);
    assert_eq!(answer.status, 302);
    let location = url::Url::parse(&answer.headers["location"]).unwrap();
    // A redirect URI without a path comes back with a trailing slash.
    assert!(
        location.as_str().starts_with("http://localhost:43123/?"),
        "{location}"
    );
    let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "st4te");
    let redeem = |verifier: &str| {
        http.post(
            &token_url(&mock),
            &[
                ("grant_type", "authorization_code"),
                ("client_id", AKS_CLIENT_ID),
                ("code", &query["code"]),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
            ],
        )
    };
    let wrong = redeem("not-the-verifier").json();
    assert_eq!(wrong["error"], "invalid_grant");
    assert_eq!(wrong["error_codes"][0], 501481);
    assert_eq!(redeem(verifier).status, 200);
    let again = redeem(verifier).json();
    assert_eq!(again["error_codes"][0], 54005);

    // Only loopback http redirect URIs are accepted.
    let refused = authorize(&mock, &http, &challenge, "http://evil.example/");
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("AADSTS50011"));
}

fn device_tokens(mock: &MockEntra, http: &Http) -> Value {
    let started = start_device_code(mock, http);
    mock.approve(started["user_code"].as_str().unwrap());
    http.post(
        &token_url(mock),
        &[
            ("grant_type", "device_code"),
            ("client_id", AKS_CLIENT_ID),
            ("device_code", started["device_code"].as_str().unwrap()),
        ],
    )
    .json()
}

fn refresh(mock: &MockEntra, http: &Http, refresh_token: &str) -> Answer {
    http.post(
        &token_url(mock),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", AKS_CLIENT_ID),
            ("refresh_token", refresh_token),
            ("scope", &scope()),
        ],
    )
}

#[test]
fn refresh_tokens_rotate_the_old_one_stays_valid_and_revocation_ends_them() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    let first = device_tokens(&mock, &http)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = refresh(&mock, &http, &first).json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second, "a new refresh token each time");
    assert_eq!(
        refresh(&mock, &http, &first).status,
        200,
        "the old one still works"
    );
    assert_eq!(mock.requests("refresh_token"), 2);

    mock.revoke_refresh_tokens();
    let revoked = refresh(&mock, &http, &second);
    assert_eq!(revoked.status, 400);
    assert_eq!(revoked.json()["error"], "invalid_grant");
    assert_eq!(revoked.json()["error_codes"][0], 50173);
    assert_eq!(
        refresh(&mock, &http, "made-up").json()["error_codes"][0],
        9002313
    );
}

#[test]
fn strict_rotation_takes_a_used_refresh_token_for_theft_and_revokes_the_sign_in() {
    let mock = MockEntra::start(MockConfig {
        strict_rotation: true,
        ..MockConfig::default()
    });
    let http = Http::new();
    let token = |answer: Answer| answer.json()["refresh_token"].as_str().unwrap().to_string();
    let first = device_tokens(&mock, &http)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let second = token(refresh(&mock, &http, &first));
    let third = token(refresh(&mock, &http, &second));
    // Using `first` again: reuse. Every token of the sign-in is gone, the newest too.
    let reused = refresh(&mock, &http, &first);
    assert_eq!(reused.status, 400);
    assert_eq!(reused.json()["error"], "invalid_grant");
    assert_eq!(mock.requests("refresh_token_reused"), 1);
    assert_eq!(refresh(&mock, &http, &third).status, 400);
    // Another sign-in is another family, untouched.
    let other = device_tokens(&mock, &http)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(refresh(&mock, &http, &other).status, 200);
}

#[test]
fn unknown_clients_resources_tenants_and_grants_are_refused_like_entra() {
    let mut config = MockConfig::default();
    config.unknown_tenants.push("nowhere.example".into());
    let mock = MockEntra::start(config);
    let http = Http::new();
    let devicecode = |tenant: &str, client: &str, scope: &str| {
        http.post(
            &format!("{}/{tenant}/oauth2/v2.0/devicecode", mock.base_url()),
            &[("client_id", client), ("scope", scope)],
        )
        .json()
    };
    let e = devicecode(TENANT_ID, "00000000-dead-beef-0000-000000000000", &scope());
    assert_eq!(
        (e["error"].as_str(), e["error_codes"][0].as_u64()),
        (Some("unauthorized_client"), Some(700016))
    );
    let e = devicecode(
        TENANT_ID,
        AKS_CLIENT_ID,
        "11111111-0000-0000-0000-000000000000/.default",
    );
    assert_eq!(
        (e["error"].as_str(), e["error_codes"][0].as_u64()),
        (Some("invalid_resource"), Some(500011))
    );
    let e = devicecode("nowhere.example", AKS_CLIENT_ID, &scope());
    assert_eq!(
        (e["error"].as_str(), e["error_codes"][0].as_u64()),
        (Some("invalid_tenant"), Some(90002))
    );
    let e = http
        .post(
            &token_url(&mock),
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:saml2-bearer",
                ),
                ("client_id", AKS_CLIENT_ID),
            ],
        )
        .json();
    assert_eq!(
        (e["error"].as_str(), e["error_codes"][0].as_u64()),
        (Some("unsupported_grant_type"), Some(70003))
    );
}

#[test]
fn injected_faults_come_one_per_request() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    let rt = device_tokens(&mock, &http)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    mock.inject(Fault::Status(503), 1);
    mock.inject(Fault::TooManyRequests { retry_after: 7 }, 1);
    mock.inject(Fault::Malformed, 1);
    mock.inject(Fault::Delay(Duration::from_millis(200)), 1);
    assert_eq!(refresh(&mock, &http, &rt).status, 503);
    let limited = refresh(&mock, &http, &rt);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "7");
    let malformed = refresh(&mock, &http, &rt);
    assert_eq!(malformed.status, 200);
    assert!(serde_json::from_str::<Value>(&malformed.body).is_err());
    let started = std::time::Instant::now();
    assert_eq!(refresh(&mock, &http, &rt).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(refresh(&mock, &http, &rt).status, 200);
}

#[test]
fn the_mock_entra_binary_prints_its_base_url_and_serves() {
    let mut child = std::process::Command::new(&binaries().mock_entra)
        .args(["--auto-approve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let base = rx.recv_timeout(DEADLINE).unwrap().trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let http = Http::new();
    let doc = http
        .get(&format!(
            "{base}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
        ))
        .json();
    assert_eq!(
        doc["device_authorization_endpoint"],
        format!("{base}/{TENANT_ID}/oauth2/v2.0/devicecode")
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Signs a certificate client assertion by hand (PS256), with the claims given.
fn assertion(cert: &broker_tests::harness::ClientCert, claims: &Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": cert.thumbprint});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::signature::RsaKeyPair::from_pkcs8(&cert.private_key).unwrap();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PSS_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

#[test]
fn certificate_assertions_are_checked_for_signature_audience_and_time() {
    let mock = MockEntra::start(MockConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let cert = broker_tests::harness::ClientCert::generate(dir.path(), "app");
    let impostor = broker_tests::harness::ClientCert::generate(dir.path(), "impostor");
    let app = "aaaaaaaa-0000-0000-0000-00000000000a";
    mock.register_app(
        app,
        broker_tests::mock_entra::App {
            certificate: Some((cert.thumbprint.clone(), cert.public_key.clone())),
            ..Default::default()
        },
    );
    let http = Http::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64| serde_json::json!({"aud": aud, "iss": app, "sub": app, "jti": "j", "nbf": now, "iat": now, "exp": exp});
    let good_aud = token_url(&mock);
    let redeem = |assertion: String| {
        http.post(
            &token_url(&mock),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", app),
                ("scope", &format!("{AKS_SERVER_ID}/.default")),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
        )
    };
    let ok = redeem(assertion(&cert, &claims(&good_aud, now + 600)));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let body = ok.json();
    assert!(body.get("refresh_token").is_none());
    assert_eq!(
        mock.verify(body["access_token"].as_str().unwrap(), AKS_SERVER_ID)
            .unwrap()
            .azp,
        app
    );

    for (assertion, code) in [
        (
            assertion(&cert, &claims("https://elsewhere/token", now + 600)),
            700021,
        ),
        (assertion(&cert, &claims(&good_aud, now - 10)), 700024),
        // The impostor's key, presented under the registered thumbprint.
        (
            assertion(
                &broker_tests::harness::ClientCert {
                    thumbprint: cert.thumbprint.clone(),
                    ..impostor
                },
                &claims(&good_aud, now + 600),
            ),
            700027,
        ),
    ] {
        let refused = redeem(assertion);
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.json()["error"], "invalid_client");
        assert_eq!(refused.json()["error_codes"][0], code);
    }
}

#[test]
fn imds_wants_the_metadata_header_and_answers_numbers_as_strings() {
    let mock = MockEntra::start(MockConfig::default());
    let http = Http::new();
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={AKS_SERVER_ID}",
        mock.base_url()
    );
    let without = http.get(&url);
    assert_eq!(without.status, 400);
    assert!(
        without
            .body
            .contains("Required metadata header not specified")
    );
    let with = Answer {
        ..Http::answer(
            http.agent
                .get(&url)
                .header("Metadata", "true")
                .call()
                .unwrap(),
        )
    };
    assert_eq!(with.status, 200, "{}", with.body);
    let body = with.json();
    assert!(body["expires_in"].is_string());
    assert!(body["expires_on"].is_string());
    assert_eq!(body["resource"], AKS_SERVER_ID);
}
