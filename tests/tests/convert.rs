//! `brokerctl kubeconfig convert` on kubeconfigs shaped like those users have, then real kubectl
//! through the converted files.

use std::path::{Path, PathBuf};

use base64::Engine;
use broker_tests::apiserver::FakeApiServer;
use broker_tests::harness::{
    Sandbox, SecretService, as_strs, binaries, device_login, failure, fast_mock, on_path, require,
    success,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, App, MockEntra, TENANT_ID};

const SPN: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const SECRET: &str = "kubeconfig-plaintext-secret~42";
const OIDC_CLIENT: &str = "cccccccc-0000-0000-0000-00000000000c";
const OLD_REFRESH_TOKEN: &str = "0.legacy-refresh-token-in-the-kubeconfig";

fn fixture(name: &str, mock: &MockEntra, api: &FakeApiServer) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kubeconfig")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .replace("{{SERVER}}", api.url())
        .replace(
            "{{CA}}",
            &base64::engine::general_purpose::STANDARD.encode(api.ca_pem()),
        )
        .replace("{{SECRET}}", SECRET)
        .replace("{{AUTHORITY}}", &mock.authority_host())
        .replace("{{OLD_ACCESS_TOKEN}}", "old-access-token-in-the-kubeconfig")
        .replace("{{OLD_REFRESH_TOKEN}}", OLD_REFRESH_TOKEN)
}

struct Bench {
    mock: MockEntra,
    api: FakeApiServer,
    sandbox: Sandbox,
    files: Vec<PathBuf>,
    /// The real keyring, when brokerd keeps secrets there.
    _keyring: Option<SecretService>,
}

/// Two kubeconfig files in $KUBECONFIG, a mock that knows their apps, and brokerd on memory.
fn bench() -> (Bench, broker_tests::harness::Daemon) {
    bench_with(false)
}

/// The same, brokerd keeping secrets in a real Secret Service (gnome-keyring).
fn bench_with_keyring() -> (Bench, broker_tests::harness::Daemon) {
    bench_with(true)
}

fn bench_with(keyring: bool) -> (Bench, broker_tests::harness::Daemon) {
    let mock = fast_mock();
    mock.register_app(
        SPN,
        App {
            secret: Some(SECRET.into()),
            ..App::default()
        },
    );
    mock.state().register_client(OIDC_CLIENT);
    mock.state().register_resource(OIDC_CLIENT);
    let api = FakeApiServer::start(mock.shared_state());
    api.accept_audience(OIDC_CLIENT);
    let mut sandbox = Sandbox::new();
    let kube = sandbox.home.join(".kube");
    std::fs::create_dir_all(&kube).unwrap();
    let files = vec![kube.join("config"), kube.join("other.yaml")];
    std::fs::write(&files[0], fixture("az-aks.yaml", &mock, &api)).unwrap();
    std::fs::write(&files[1], fixture("oidc-and-legacy.yaml", &mock, &api)).unwrap();
    let list = std::env::join_paths(&files).unwrap();
    sandbox.set_env("KUBECONFIG", list);
    // The converted users name the public cloud; this sends them to the mock instead.
    sandbox.set_env("AZURE_AUTHORITY_HOST", mock.authority_host());
    let (keyring, daemon) = if keyring {
        let keyring = SecretService::start(&mut sandbox);
        (Some(keyring), sandbox.start_daemon(&[]))
    } else {
        (None, sandbox.start_daemon(&["--store", "memory"]))
    };
    (
        Bench {
            mock,
            api,
            sandbox,
            files,
            _keyring: keyring,
        },
        daemon,
    )
}

fn kubectl(sandbox: &Sandbox, context: &str) -> std::process::Output {
    sandbox
        .command(Path::new("kubectl"))
        .args(["--context", context, "get", "--raw", "/api"])
        .output()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn converts_every_shape_then_kubectl_runs_through_the_result() {
    if !require("kubectl", on_path("kubectl"))
        || !require(
            "dbus, gnome-keyring and libsecret-tools",
            SecretService::available(),
        )
    {
        return;
    }
    let (b, daemon) = bench_with_keyring();
    let originals: Vec<String> = b.files.iter().map(|f| read(f)).collect();

    // A dry run shows the plan and the diff, with the secret masked, and writes nothing.
    let out = success(
        &b.sandbox.ctl(&["kubeconfig", "convert", "--dry-run"]),
        "dry run",
    );
    for user in [
        "clusterUser_my-rg_my-aks",
        "ci-deployer",
        "oidc",
        "legacy-azure",
        "browser",
    ] {
        assert!(out.contains(&format!("user {user} (")), "{user}: {out}");
    }
    assert!(!out.contains("user static"), "{out}");
    assert!(out.contains("+      command: "), "{out}");
    assert!(out.contains("<secret>"), "{out}");
    assert!(
        !out.contains(SECRET) && !out.contains(OLD_REFRESH_TOKEN),
        "{out}"
    );
    assert!(out.contains("Dry run"), "{out}");
    for (file, original) in b.files.iter().zip(&originals) {
        assert_eq!(&read(file), original);
    }

    let out = success(&b.sandbox.ctl(&["kubeconfig", "convert"]), "convert");
    assert!(
        out.contains("Moved the secrets of user ci-deployer into the keyring (Secret Service)"),
        "{out}"
    );
    assert!(
        out.contains("its secrets replaced by the names of their keyring entries"),
        "{out}"
    );
    let converted: Vec<String> = b.files.iter().map(|f| read(f)).collect();
    for text in &converted {
        assert!(!text.contains("command: kubelogin"), "{text}");
        assert!(
            !text.contains(SECRET) && !text.contains(OLD_REFRESH_TOKEN),
            "{text}"
        );
        assert!(
            text.contains(&binaries().shim.display().to_string()),
            "{text}"
        );
    }
    // What is not ours stays exactly as it was, comments included.
    assert!(
        converted[0]
            .contains("- name: static\n  user:\n    token: a-static-token-that-is-not-ours\n")
    );
    assert!(converted[0].starts_with("apiVersion: v1\n# As `az aks get-credentials` writes it"));
    assert!(converted[1].contains("# kubectl before 1.26 with the azure auth-provider"));
    // kubectl itself reads the converted files.
    let view = b
        .sandbox
        .command(Path::new("kubectl"))
        .args(["config", "view", "-o", "jsonpath={.users[*].name}"])
        .output()
        .unwrap();
    let names = success(&view, "kubectl config view");
    assert!(
        names.contains("ci-deployer") && names.contains("legacy-azure"),
        "{names}"
    );
    // Backups keep the originals, private.
    let backups: Vec<_> = std::fs::read_dir(b.sandbox.home.join(".kube"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(".token-broker-backup-")
        })
        .collect();
    assert_eq!(backups.len(), 2);
    for backup in &backups {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            backup.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Idempotent.
    let again = success(&b.sandbox.ctl(&["kubeconfig", "convert"]), "convert again");
    assert!(again.contains("Nothing to convert."), "{again}");

    // kubectl through the converted users. The service principal's secret is in the keyring.
    success(
        &kubectl(&b.sandbox, "ci"),
        "kubectl as the service principal",
    );
    // One device login serves the az-shaped user and the legacy one: same session.
    device_login(&b.sandbox, &b.mock);
    success(&kubectl(&b.sandbox, "my-aks"), "kubectl as the az aks user");
    success(
        &kubectl(&b.sandbox, "legacy"),
        "kubectl as the former auth-provider user",
    );
    // The int128 user signs in with a device code for its own client.
    let oidc_login: Vec<String> = [
        "--server-id",
        OIDC_CLIENT,
        "--client-id",
        OIDC_CLIENT,
        "--tenant-id",
        TENANT_ID,
        "--authority-host",
        &b.mock.authority_host(),
    ]
    .map(String::from)
    .to_vec();
    let mut login = b.sandbox.start_login(&as_strs(&oidc_login));
    let code = login.next_event();
    assert!(b.mock.approve(code["user_code"].as_str().unwrap()));
    assert_eq!(login.next_event()["event"], "logged_in");
    success(
        &kubectl(&b.sandbox, "oidc"),
        "kubectl as the oidc-login user",
    );
    let subjects: Vec<_> = b.api.requests().iter().map(|r| r.subject.clone()).collect();
    assert!(subjects.contains(&Some(SPN.to_string())), "{subjects:?}");
    assert!(
        subjects.contains(&Some("alice@contoso.example".to_string())),
        "{subjects:?}"
    );

    // The secret is in the keyring, and in no file at all: not the kubeconfig, not its
    // backup, not brokerd's log.
    assert_eq!(b.sandbox.files_containing(SECRET), Vec::<PathBuf>::new());
    assert_eq!(
        b.sandbox.files_containing(OLD_REFRESH_TOKEN),
        Vec::<PathBuf>::new()
    );
    assert!(!daemon.log().contains(SECRET));

    // Undo puts the originals back, the secret read back from the keyring; the legacy
    // provider's cached tokens, which kubectl 1.26 and later cannot use, stay dropped.
    let out = success(&b.sandbox.ctl(&["kubeconfig", "convert", "--undo"]), "undo");
    assert!(out.contains("Restored"), "{out}");
    assert_eq!(read(&b.files[0]), originals[0]);
    assert_eq!(
        read(&b.files[1]),
        originals[1]
            .replace(
                "old-access-token-in-the-kubeconfig",
                "\"token-broker: dropped\""
            )
            .replace(OLD_REFRESH_TOKEN, "\"token-broker: dropped\"")
    );
    let _ = AKS_SERVER_ID;
}

#[test]
fn secrets_go_nowhere_that_forgets_them_unless_told_and_undo_says_what_is_missing() {
    let (b, _daemon) = bench();
    let first = b.files[0].display().to_string();
    let original = read(&b.files[0]);
    let err = failure(
        &b.sandbox
            .ctl(&["kubeconfig", "convert", "--kubeconfig", &first]),
        "convert into a memory store",
    );
    assert!(err.contains("in memory only"), "{err}");
    assert!(err.contains("--allow-memory-store"), "{err}");
    assert_eq!(read(&b.files[0]), original, "nothing was written");

    let out = success(
        &b.sandbox.ctl(&[
            "kubeconfig",
            "convert",
            "--kubeconfig",
            &first,
            "--allow-memory-store",
        ]),
        "convert, told to",
    );
    assert!(
        out.contains("into brokerd's memory (forgotten when it stops)"),
        "{out}"
    );
    // The undo hint names the file that was converted.
    assert!(
        out.contains(&format!("convert --undo --kubeconfig {first}")),
        "{out}"
    );
    // brokerctl cannot read memory: undo says so, and changes nothing.
    let converted = read(&b.files[0]);
    let err = failure(
        &b.sandbox
            .ctl(&["kubeconfig", "convert", "--undo", "--kubeconfig", &first]),
        "undo from memory",
    );
    assert!(err.contains("cannot be put back"), "{err}");
    assert_eq!(read(&b.files[0]), converted);
}

#[test]
fn one_context_one_file_and_clear_errors() {
    let (b, _daemon) = bench();
    let first = b.files[0].display().to_string();
    let out = success(
        &b.sandbox.ctl(&[
            "kubeconfig",
            "convert",
            "--kubeconfig",
            &first,
            "--context",
            "my-aks",
        ]),
        "convert one context",
    );
    assert!(out.contains("user clusterUser_my-rg_my-aks"), "{out}");
    let text = read(&b.files[0]);
    assert!(
        text.contains("/usr/local/bin/kubelogin"),
        "the CI user is untouched: {text}"
    );
    assert!(text.contains(SECRET), "the CI user is untouched");

    let err = failure(
        &b.sandbox
            .ctl(&["kubeconfig", "convert", "--context", "nope"]),
        "unknown context",
    );
    assert!(err.contains("no context named \"nope\""), "{err}");
    let junk = b.sandbox.root().join("junk.yaml");
    std::fs::write(&junk, "- not\n- a kubeconfig\n").unwrap();
    let err = failure(
        &b.sandbox.ctl(&[
            "kubeconfig",
            "convert",
            "--kubeconfig",
            junk.to_str().unwrap(),
        ]),
        "junk",
    );
    assert!(err.contains("not a kubeconfig"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn secrets_stay_put_when_brokerd_cannot_take_them() {
    let (b, mut daemon) = bench();
    daemon.stop();
    // brokerd is down and may not be started on demand.
    let config = b.sandbox.home.join(".config/token-broker/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "start_on_demand = false\n").unwrap();
    let original = read(&b.files[0]);
    let err = failure(
        &b.sandbox.ctl(&["kubeconfig", "convert"]),
        "convert without brokerd",
    );
    assert!(err.contains("brokerd must be running"), "{err}");
    assert!(err.contains("start on demand is turned off"), "{err}");
    assert_eq!(read(&b.files[0]), original, "nothing was written");
}
