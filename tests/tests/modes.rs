//! Every kubelogin login mode, end to end through real kubectl, with the secrets kept out of
//! every file, log line and kubeconfig.

use broker_tests::apiserver::FakeApiServer;
use broker_tests::harness::{
    ClientCert, Daemon, KubeUser, Sandbox, failure, fast_mock, on_path, require, success,
};
use broker_tests::mock_entra::{
    AKS_SERVER_ID, App, FEDERATION_AUDIENCE, GITHUB_SUBJECT, ManagedIdentity, MockConfig,
    MockEntra, MockUser, TENANT_ID, pipeline_subject,
};

const APP: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const SECRET: &str = "spn-secret-Value~7Q8s.6tZa1!";

fn base_args(mock: &MockEntra, login: &str) -> Vec<String> {
    let mut args = args_without_tenant(mock, login);
    args.extend(["--tenant-id", TENANT_ID].map(String::from));
    args
}

/// Names another tenant in `base_args`' place: another session.
fn set_tenant(args: &mut [String], tenant: &str) {
    let at = args.iter().position(|a| a == "--tenant-id").unwrap() + 1;
    args[at] = tenant.into();
}

/// `base_args` but the tenant, for the modes that take it from the environment.
fn args_without_tenant(mock: &MockEntra, login: &str) -> Vec<String> {
    [
        "--login",
        login,
        "--server-id",
        AKS_SERVER_ID,
        "--authority-host",
        &mock.authority_host(),
    ]
    .map(String::from)
    .to_vec()
}

fn kubectl_available() -> bool {
    require("kubectl", on_path("kubectl"))
}

/// The subject the fake API server saw on its last request.
fn last_subject(api: &FakeApiServer) -> String {
    let seen = api.requests();
    let last = seen.last().expect("a request reached the API server");
    assert!(last.authorized, "{seen:?}");
    last.subject.clone().unwrap_or_default()
}

/// No file under the sandbox (kubeconfig, index, logs, keyring files) holds `secret`.
fn assert_nowhere(sandbox: &Sandbox, secret: &str) {
    let found = sandbox.files_containing(secret);
    assert!(found.is_empty(), "a secret is in {found:?}");
}

#[test]
fn spn_with_a_client_secret_from_the_environment_and_a_wrong_one_refused() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    mock.register_app(
        APP,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    let api = FakeApiServer::start(mock.shared_state());
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = base_args(&mock, "spn");
    args.extend(["--client-id".into(), APP.into()]);
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("spn", args)]);

    // A wrong secret: the IdP refuses it, and brokerd says it is a configuration problem.
    let out = sandbox.kubectl_get_api(&config, "spn", &[("AZURE_CLIENT_SECRET", "not-the-secret")]);
    let err = failure(&out, "kubectl with a wrong secret");
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(err.contains("invalid_client"), "{err}");
    // Asking again with the same wrong secret does not ask the IdP again.
    let asked = mock.requests("client_credentials");
    failure(
        &sandbox.kubectl_get_api(&config, "spn", &[("AZURE_CLIENT_SECRET", "not-the-secret")]),
        "kubectl again",
    );
    assert_eq!(mock.requests("client_credentials"), asked);

    // brokerd's reason, as a program sees it: a configuration error, not "login required".
    let (reason, message) = broker_tests::harness::get_token_reason(
        &sandbox,
        broker_proto::v1::SessionSpec {
            server_id: AKS_SERVER_ID.into(),
            tenant_id: TENANT_ID.into(),
            client_id: APP.into(),
            authority_host: mock.authority_host(),
            login_mode: broker_proto::v1::LoginMode::ServicePrincipal as i32,
            ..Default::default()
        },
        broker_proto::v1::Credentials {
            client_secret: "not-the-secret".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(reason, broker_proto::v1::ErrorReason::Config, "{message}");
    let st = success(&sandbox.ctl(&["status", "-o", "json"]), "status");
    assert!(st.contains("\"login_required\""), "{st}");
    assert!(st.contains("AADSTS7000215"), "{st}");

    // The right one (kubelogin's own variable name) works at once.
    let out = sandbox.kubectl_get_api(
        &config,
        "spn",
        &[("AAD_SERVICE_PRINCIPAL_CLIENT_SECRET", SECRET)],
    );
    success(&out, "kubectl with the secret");
    assert_eq!(last_subject(&api), APP);
    let st = success(&sandbox.ctl(&["status", "-o", "json"]), "status");
    assert!(st.contains("\"spn\""), "{st}");

    assert_nowhere(&sandbox, SECRET);
    assert!(!daemon.log().contains(SECRET));
    assert!(!daemon.log().contains("not-the-secret"));
}

#[test]
fn spn_with_a_secret_stored_by_brokerctl_login() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    mock.register_app(
        APP,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    let api = FakeApiServer::start(mock.shared_state());
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut args = base_args(&mock, "spn");
    args.extend(["--client-id".into(), APP.into()]);

    // The secret arrives on stdin, never on a command line.
    let mut login = sandbox
        .command(&broker_tests::harness::binaries().brokerctl)
        .arg("login")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = login.stdin.take().unwrap();
        writeln!(stdin, "{SECRET}").unwrap();
    }
    let out = login.wait_with_output().unwrap();
    let text = success(&out, "brokerctl login --login spn");
    assert!(text.contains("Signed in"), "{text}");

    // kubectl needs nothing but the kubeconfig now.
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("spn", args)]);
    success(&sandbox.kubectl_get_api(&config, "spn", &[]), "kubectl");
    assert_eq!(last_subject(&api), APP);
    assert_nowhere(&sandbox, SECRET);
    assert!(!daemon.log().contains(SECRET));
}

#[test]
fn spn_with_a_certificate_pem_or_pfx_and_a_badly_signed_assertion_refused() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let cert = ClientCert::generate(sandbox.root(), "app");
    mock.register_app(
        APP,
        App {
            certificate: Some((cert.thumbprint.clone(), cert.public_key.clone())),
            ..App::default()
        },
    );
    let api = FakeApiServer::start(mock.shared_state());
    let daemon = sandbox.start_daemon(&["--store", "memory"]);

    // PEM through kubelogin's variable.
    let mut pem_args = base_args(&mock, "spn");
    pem_args.extend(["--client-id".into(), APP.into()]);
    // PFX through the flag, its password through the variable.
    let mut pfx_args = pem_args.clone();
    pfx_args.extend([
        "--client-certificate".into(),
        cert.pfx.display().to_string(),
    ]);
    set_tenant(&mut pfx_args, "00000000-0000-0000-0000-0000000000f0"); // another session
    let config = sandbox.kubeconfig(
        &api,
        &[
            KubeUser::new("pem", pem_args),
            KubeUser::new("pfx", pfx_args),
        ],
    );
    let pem = cert.pem.display().to_string();
    success(
        &sandbox.kubectl_get_api(&config, "pem", &[("AZURE_CLIENT_CERTIFICATE_PATH", &pem)]),
        "kubectl with a PEM certificate",
    );
    assert_eq!(last_subject(&api), APP);
    success(
        &sandbox.kubectl_get_api(
            &config,
            "pfx",
            &[("AZURE_CLIENT_CERTIFICATE_PASSWORD", &cert.pfx_password)],
        ),
        "kubectl with a PFX certificate",
    );
    assert_eq!(mock.requests("client_credentials_ok"), 2);

    // A certificate the app does not know (same thumbprint registered, another key): the mock
    // finds the signature bad, and brokerd reports a configuration error.
    let other = ClientCert::generate(sandbox.root(), "impostor");
    mock.register_app(
        APP,
        App {
            certificate: Some((other.thumbprint.clone(), cert.public_key.clone())),
            ..App::default()
        },
    );
    let mut args = base_args(&mock, "spn");
    args.extend([
        "--client-id".into(),
        APP.into(),
        "--client-certificate".into(),
        other.pem.display().to_string(),
    ]);
    set_tenant(&mut args, "00000000-0000-0000-0000-0000000000f1");
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("bad", args)]);
    let err = failure(
        &sandbox.kubectl_get_api(&config, "bad", &[]),
        "kubectl with a bad signature",
    );
    assert!(err.contains("AADSTS700027"), "{err}");
    assert!(!daemon.log().contains(&cert.pfx_password));
    assert_nowhere(&sandbox, &cert.pfx_password);
}

fn write_token_file(path: &std::path::Path, token: &str) {
    // As the kubelet does: write elsewhere, rename into place.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn workload_identity_with_a_rotated_token_file_and_refused_assertions() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let subject = "system:serviceaccount:default:deployer";
    mock.register_app(
        APP,
        App {
            federated: Some((mock.federation_issuer(), subject.into())),
            ..App::default()
        },
    );
    let api = FakeApiServer::start(mock.shared_state());
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let token_dir = sandbox.root().join("serviceaccount");
    std::fs::create_dir_all(&token_dir).unwrap();
    let token_file = token_dir.join("token");
    let file = token_file.display().to_string();
    // What AKS's workload identity webhook injects into the pod.
    let env = [
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_TENANT_ID", TENANT_ID),
        ("AZURE_FEDERATED_TOKEN_FILE", file.as_str()),
    ];
    let args = args_without_tenant(&mock, "workloadidentity");
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("wi", args)]);

    // A token for the wrong audience, then an expired one: both refused, as configuration errors.
    write_token_file(
        &token_file,
        &mock.mint_federated_token(subject, "api://somewhere-else", 3600),
    );
    let err = failure(
        &sandbox.kubectl_get_api(&config, "wi", &env),
        "wrong audience",
    );
    assert!(err.contains("AADSTS700212"), "{err}");
    daemon.skip_log();
    write_token_file(
        &token_file,
        &mock.mint_federated_token(subject, FEDERATION_AUDIENCE, -60),
    );
    daemon.wait_for_log("federated token file changed");
    let err = failure(
        &sandbox.kubectl_get_api(&config, "wi", &env),
        "expired assertion",
    );
    assert!(err.contains("AADSTS700024"), "{err}");

    // The kubelet rotates the file: brokerd notices and the next kubectl succeeds, no restart.
    daemon.skip_log();
    let good = mock.mint_federated_token(subject, FEDERATION_AUDIENCE, 3600);
    write_token_file(&token_file, &good);
    daemon.wait_for_log("federated token file changed");
    success(
        &sandbox.kubectl_get_api(&config, "wi", &env),
        "kubectl after rotation",
    );
    assert_eq!(last_subject(&api), APP);
    assert!(!daemon.log().contains(&good));
}

#[test]
fn managed_identity_system_and_user_assigned_through_a_flaky_imds() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let user_assigned = "bbbbbbbb-0000-0000-0000-00000000000b";
    mock.add_managed_identity(ManagedIdentity {
        client_id: user_assigned.into(),
        resource_id: Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci".into()),
    });
    let api = FakeApiServer::start(mock.shared_state());
    let mut sandbox = Sandbox::new();
    sandbox.set_env("AZURE_POD_IDENTITY_AUTHORITY_HOST", mock.base_url());
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let msi = |extra: &[&str]| {
        let mut args: Vec<String> = ["--login", "msi", "--server-id", AKS_SERVER_ID]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let config = sandbox.kubeconfig(
        &api,
        &[
            KubeUser::new("system", msi(&[])),
            KubeUser::new("by-client", msi(&["--client-id", user_assigned])),
            KubeUser::new("by-resource", msi(&["--identity-resource-id", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci"])),
        ],
    );
    // IMDS fails twice (as it does while an identity is being assigned), then answers.
    mock.inject(broker_tests::mock_entra::Fault::Status(503), 1);
    mock.inject(broker_tests::mock_entra::Fault::Status(404), 1);
    success(
        &sandbox.kubectl_get_api(&config, "system", &[]),
        "system-assigned",
    );
    assert_eq!(last_subject(&api), "99999999-9999-9999-9999-999999999999");
    assert_eq!(mock.requests("imds"), 3);
    success(
        &sandbox.kubectl_get_api(&config, "by-client", &[]),
        "user-assigned by client id",
    );
    assert_eq!(last_subject(&api), user_assigned);
    success(
        &sandbox.kubectl_get_api(&config, "by-resource", &[]),
        "user-assigned by resource id",
    );
    assert_eq!(last_subject(&api), user_assigned);
}

#[test]
fn azure_cli_and_azd_run_by_brokerd_once_per_token() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let api = FakeApiServer::start(mock.shared_state());
    let mut sandbox = Sandbox::new();
    let calls = sandbox.root().join("calls");
    let token = mock.mint_user_token(AKS_SERVER_ID, 3600);
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let answer = sandbox.root().join("az-answer.json");
    std::fs::write(
        &answer,
        format!(
            r#"{{"accessToken":"{token}","expiresOn":"2030-01-01 00:00:00.000000","expires_on":{expires_on},"subscription":"s","tenant":"{TENANT_ID}","tokenType":"Bearer"}}"#
        ),
    )
    .unwrap();
    let azd_answer = sandbox.root().join("azd-answer.json");
    std::fs::write(
        &azd_answer,
        format!(
            r#"{{"token":"{token}","expiresOn":"{}"}}"#,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires_on)
            )
        ),
    )
    .unwrap();
    sandbox.script(
        "az",
        &format!(
            "echo \"az $*\" >> {}\ncat {}",
            calls.display(),
            answer.display()
        ),
    );
    sandbox.script(
        "azd",
        &format!(
            "echo \"azd $*\" >> {}\ncat {}",
            calls.display(),
            azd_answer.display()
        ),
    );
    sandbox.prepend_path(&sandbox.root().join("bin"));
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let config = sandbox.kubeconfig(
        &api,
        &[
            KubeUser::new(
                "az",
                [
                    "--login",
                    "azurecli",
                    "--server-id",
                    AKS_SERVER_ID,
                    "--tenant-id",
                    TENANT_ID,
                ]
                .map(String::from)
                .to_vec(),
            ),
            KubeUser::new(
                "azd",
                ["--login", "azd", "--server-id", AKS_SERVER_ID]
                    .map(String::from)
                    .to_vec(),
            ),
        ],
    );
    for _ in 0..3 {
        success(
            &sandbox.kubectl_get_api(&config, "az", &[]),
            "kubectl with azurecli",
        );
    }
    success(
        &sandbox.kubectl_get_api(&config, "azd", &[]),
        "kubectl with azd",
    );
    assert_eq!(last_subject(&api), "alice@contoso.example");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        calls,
        format!(
            "az account get-access-token --resource {AKS_SERVER_ID} -o json --tenant {TENANT_ID}\n\
             azd auth token --output json --scope {AKS_SERVER_ID}/.default\n"
        ),
        "each tool ran once; brokerd served the rest from memory"
    );
}

#[test]
fn azure_cli_signed_out_says_to_run_az_login() {
    let mock = fast_mock();
    let mut sandbox = Sandbox::new();
    sandbox.script(
        "az",
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1",
    );
    sandbox.prepend_path(&sandbox.root().join("bin"));
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let out = sandbox.shim(&["--login", "azurecli", "--server-id", AKS_SERVER_ID], None);
    let err = failure(&out, "shim with a signed-out az");
    assert!(err.contains("az login"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let _ = mock;
}

#[test]
fn ropc_with_the_password_from_the_environment_or_remembered() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let api = FakeApiServer::start(mock.shared_state());
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let password = "correct horse battery staple";
    let mut args = base_args(&mock, "ropc");
    args.extend(["--username".into(), "alice@contoso.example".into()]);
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("ropc", args.clone())]);

    let err = failure(
        &sandbox.kubectl_get_api(&config, "ropc", &[("AZURE_PASSWORD", "wrong password")]),
        "kubectl with a wrong password",
    );
    assert!(err.contains("AADSTS50126"), "{err}");
    success(
        &sandbox.kubectl_get_api(&config, "ropc", &[("AZURE_PASSWORD", password)]),
        "kubectl with the password",
    );
    assert_eq!(last_subject(&api), "alice@contoso.example");
    // The session keeps its refresh token; the password is not needed again.
    success(
        &sandbox.kubectl_get_api(&config, "ropc", &[]),
        "kubectl without the password",
    );
    assert_eq!(mock.requests("password"), 2);
    assert_nowhere(&sandbox, password);
    assert!(!daemon.log().contains(password));
}

/// A CI job signing in with a federated token: the app `APP` trusts `subject` from the mock's
/// federation issuer, and the kubeconfig's user `user` runs `--login login` against the mock.
/// Fields drop in order: the daemon before its sandbox, the mock last.
struct CiJob {
    config: std::path::PathBuf,
    daemon: Daemon,
    sandbox: Sandbox,
    api: FakeApiServer,
    mock: MockEntra,
}

impl CiJob {
    fn new(subject: String, login: &str, user: &str) -> CiJob {
        let mock = fast_mock();
        mock.register_app(
            APP,
            App {
                federated: Some((mock.federation_issuer(), subject)),
                ..App::default()
            },
        );
        let api = FakeApiServer::start(mock.shared_state());
        let sandbox = Sandbox::new();
        let daemon = sandbox.start_daemon(&["--store", "memory"]);
        let args = args_without_tenant(&mock, login);
        let config = sandbox.kubeconfig(&api, &[KubeUser::new(user, args)]);
        CiJob {
            config,
            daemon,
            sandbox,
            api,
            mock,
        }
    }
}

#[test]
fn azure_pipelines_trades_the_job_token_for_the_service_connection_s_oidc_token() {
    if !kubectl_available() {
        return;
    }
    let connection = "5a1d0c6e-0000-4000-8000-00000000c0de";
    let CiJob {
        config,
        daemon,
        sandbox,
        api,
        mock,
    } = CiJob::new(pipeline_subject(connection), "azurepipelines", "pipeline");
    let job_token = "job-access-token-0123456789abcdef";
    mock.set_pipeline_job_token(job_token);
    let uri = mock.pipelines_oidc_uri();
    // What an AzureCLI@2 task step with a service connection has in its environment.
    let env = |token: &'static str| {
        [
            ("AZURESUBSCRIPTION_CLIENT_ID", APP),
            ("AZURESUBSCRIPTION_TENANT_ID", TENANT_ID),
            ("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", connection),
            ("SYSTEM_OIDCREQUESTURI", uri.as_str()),
            ("SYSTEM_ACCESSTOKEN", token),
        ]
    };

    let err = failure(
        &sandbox.kubectl_get_api(&config, "pipeline", &env("an-expired-job-token")),
        "a job token Azure DevOps refuses",
    );
    assert!(err.contains("Azure Pipelines refused"), "{err}");
    assert!(!err.contains("an-expired-job-token"), "{err}");
    daemon.skip_log();
    for _ in 0..3 {
        success(
            &sandbox.kubectl_get_api(&config, "pipeline", &env(job_token)),
            "kubectl in a pipeline step",
        );
    }
    assert!(!last_subject(&api).is_empty());
    // One OIDC token and one grant; the rest came from brokerd's memory.
    assert_eq!(mock.requests("pipelines_oidc"), 2, "one refused, one good");
    assert_eq!(mock.requests("client_credentials"), 1);
    assert_nowhere(&sandbox, job_token);
    assert!(!daemon.log().contains(job_token));

    // The job's token goes only to https (or loopback) endpoints.
    let err = failure(
        &sandbox.kubectl_get_api(
            &config,
            "pipeline",
            &[
                ("AZURESUBSCRIPTION_CLIENT_ID", APP),
                ("AZURESUBSCRIPTION_TENANT_ID", TENANT_ID),
                (
                    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
                    "another-connection",
                ),
                ("SYSTEM_OIDCREQUESTURI", "http://dev.azure.example/oidc"),
                ("SYSTEM_ACCESSTOKEN", job_token),
            ],
        ),
        "a plain-http OIDC endpoint",
    );
    assert!(err.contains("must be an https URL"), "{err}");
}

#[test]
fn azure_cli_with_its_config_dir_and_subscription_and_a_changed_account_dropped_at_once() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    let api = FakeApiServer::start(mock.shared_state());
    let mut sandbox = Sandbox::new();
    let root = sandbox.root().to_path_buf();
    let config_dir = root.join("azure-work");
    std::fs::create_dir_all(&config_dir).unwrap();
    let profile = config_dir.join("azureProfile.json");
    std::fs::write(&profile, r#"{"subscriptions":[{"user":{"name":"alice"}}]}"#).unwrap();
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    for (name, user) in [
        ("alice", MockConfig::default().user),
        ("bob", MockUser::bob()),
    ] {
        let token = mock.mint_token_for(&user, AKS_SERVER_ID, 3600);
        std::fs::write(
            root.join(format!("{name}.json")),
            format!(
                r#"{{"accessToken":"{token}","expires_on":{expires_on},"tokenType":"Bearer"}}"#
            ),
        )
        .unwrap();
    }
    let calls = root.join("calls");
    // A stand-in for az: signed in as whoever its profile names.
    sandbox.script(
        "az",
        &format!(
            "echo \"AZURE_CONFIG_DIR=$AZURE_CONFIG_DIR az $*\" >> {calls}\n\
             if grep -q bob \"$AZURE_CONFIG_DIR/azureProfile.json\"; then cat {root}/bob.json; \
             else cat {root}/alice.json; fi",
            calls = calls.display(),
            root = root.display()
        ),
    );
    sandbox.prepend_path(&root.join("bin"));
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    let args: Vec<String> = [
        "--login",
        "azurecli",
        "--server-id",
        AKS_SERVER_ID,
        "--subscription",
        "Dev Subscription",
    ]
    .map(String::from)
    .to_vec();
    let config = sandbox.kubeconfig(&api, &[KubeUser::new("az", args)]);
    let dir = config_dir.display().to_string();
    let env = [("AZURE_CONFIG_DIR", dir.as_str())];
    for _ in 0..2 {
        success(&sandbox.kubectl_get_api(&config, "az", &env), "kubectl");
        assert_eq!(last_subject(&api), "alice@contoso.example");
    }
    let seen = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        seen,
        format!(
            "AZURE_CONFIG_DIR={dir} az account get-access-token --resource {AKS_SERVER_ID} -o json \
             --subscription Dev Subscription\n"
        ),
        "az ran once, with the session's directory and subscription"
    );

    // `az login` as someone else (or `az logout`, `az account set`) rewrites the profile: the
    // token brokerd holds for alice must not be served any more.
    std::fs::write(&profile, r#"{"subscriptions":[{"user":{"name":"bob"}}]}"#).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        success(&sandbox.kubectl_get_api(&config, "az", &env), "kubectl");
        if last_subject(&api) == "bob@contoso.example" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice's token was still served after the account changed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn proof_of_possession_tokens_for_an_arc_cluster_through_kubectl() {
    if !kubectl_available() {
        return;
    }
    let mock = fast_mock();
    mock.register_app(
        APP,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    let arm = "/subscriptions/00000000-0000-0000-0000-00000000000s/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/arc1";
    let api = FakeApiServer::start_pop(mock.shared_state(), arm);
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory"]);
    let mut bearer = base_args(&mock, "spn");
    bearer.extend(["--client-id".into(), APP.into()]);
    let with_pop = |u: &str| {
        let mut args = bearer.clone();
        args.extend([
            "--pop-enabled".into(),
            "--pop-claims".into(),
            format!("u={u}"),
        ]);
        args
    };
    let config = sandbox.kubeconfig(
        &api,
        &[
            KubeUser::new("arc", with_pop(arm)),
            KubeUser::new(
                "other-cluster",
                with_pop("/subscriptions/x/connectedClusters/arc2"),
            ),
            KubeUser::new("bearer", bearer.clone()),
        ],
    );
    let env = [("AZURE_CLIENT_SECRET", SECRET)];
    for _ in 0..3 {
        success(
            &sandbox.kubectl_get_api(&config, "arc", &env),
            "kubectl with PoP",
        );
        assert!(!last_subject(&api).is_empty());
    }
    // One PoP access token, asked for once; each run got its own signed wrapper.
    assert_eq!(mock.requests("client_credentials"), 1);
    // The same session's token wrapped for another cluster, and a bare bearer token, are
    // refused by this one.
    failure(
        &sandbox.kubectl_get_api(&config, "other-cluster", &env),
        "a PoP token for another cluster",
    );
    assert_eq!(mock.requests("client_credentials"), 1, "same session");
    failure(
        &sandbox.kubectl_get_api(&config, "bearer", &env),
        "a bearer token at an Arc cluster",
    );
    assert!(!daemon.log().contains(SECRET));
}

#[test]
fn workload_identity_in_a_github_actions_job_uses_its_id_token() {
    if !kubectl_available() {
        return;
    }
    let CiJob {
        config,
        daemon,
        sandbox,
        api,
        mock,
    } = CiJob::new(GITHUB_SUBJECT.into(), "workloadidentity", "gha");
    let request_token = "github-request-token-0123456789";
    mock.set_github_request_token(request_token);
    let url = mock.github_id_token_url();
    // What `azure/login` and `permissions: id-token: write` leave in a job's environment.
    let env = [
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_TENANT_ID", TENANT_ID),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
    ];
    for _ in 0..2 {
        success(
            &sandbox.kubectl_get_api(&config, "gha", &env),
            "kubectl in a job",
        );
    }
    assert!(!last_subject(&api).is_empty());
    assert_eq!(mock.requests("github_id_token"), 1);
    assert_eq!(mock.requests("client_credentials"), 1);
    assert_nowhere(&sandbox, request_token);
    assert!(!daemon.log().contains(request_token));
}
