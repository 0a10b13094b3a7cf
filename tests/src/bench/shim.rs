//! broker-shim as kubectl meets it: its size, its time from process start to ExecCredential
//! beside `cat` (the floor) and gke-gcloud-auth-plugin (a real peer answering from its cache),
//! and kubectl end to end beside a static token.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{Candidate, compare};
use super::{Baseline, NO_WORSE, Row, Scale, mib, ms};
use crate::apiserver::FakeApiServer;
use crate::harness::{Sandbox, binaries, exec_info, on_path, session_args};
use crate::mock_entra::{AKS_SERVER_ID, MockEntra};

const SIZE_TARGET: u64 = 1_500_000;

pub fn size() -> Row {
    let bytes = std::fs::metadata(&binaries().shim).map_or(0, |m| m.len());
    Row::new(
        "broker-shim size (stripped release)",
        format!("{} ({bytes} bytes)", mib(bytes)),
        "≤ 1.5 MB",
        format!(
            "brokerd {}",
            mib(std::fs::metadata(&binaries().brokerd).map_or(0, |m| m.len()))
        ),
        Some(bytes <= SIZE_TARGET),
    )
}

/// A HOME where gke-gcloud-auth-plugin answers from its cache file, without gcloud.
fn gke_home(root: &Path) -> PathBuf {
    let home = root.join("gke-home");
    std::fs::create_dir_all(home.join(".kube")).expect("mkdir");
    std::fs::write(
        home.join(".kube/config"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n\
         users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      \
         command: gke-gcloud-auth-plugin\ncontexts:\n- name: gke_p_z_c\n  context: {cluster: c, user: u}\n\
         current-context: gke_p_z_c\n",
    )
    .expect("kubeconfig");
    std::fs::write(
        home.join(".kube/gke_gcloud_auth_plugin_cache"),
        "{\"current_context\": \"gke_p_z_c\", \"access_token\": \"ya29.cached-token\", \
         \"token_expiry\": \"2099-01-01T00:00:00Z\", \"extra_args\": \"\"}\n",
    )
    .expect("cache");
    home
}

/// Every candidate starts with the same small environment, directly (no shell).
fn bare(program: &Path, home: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("HOME", home);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Shim, `cat`, (when installed) gke-gcloud-auth-plugin and (when given) the baseline's shim,
/// round by round, all against the same brokerd.
pub fn latency(
    sandbox: &Sandbox,
    mock: &MockEntra,
    scale: Scale,
    baseline: Option<&Baseline>,
) -> Vec<Row> {
    let shim = binaries().shim.clone();
    let socket = sandbox.socket.clone();
    let home = sandbox.home.clone();
    let args = std::iter::once("get-token".to_string())
        .chain(session_args(mock))
        .collect::<Vec<_>>();
    let info = exec_info("client.authentication.k8s.io/v1", false);
    let small_file = sandbox.root().join("small-file");
    std::fs::write(&small_file, "x".repeat(600)).expect("small file");
    let cat = which("cat").expect("cat");

    let shim_candidate = |name: &str, shim: PathBuf| Candidate {
        name: name.into(),
        command: Box::new({
            let (home, args, socket, info) =
                (home.clone(), args.clone(), socket.clone(), info.clone());
            move || {
                let mut c = bare(&shim, &home);
                c.args(&args)
                    .env("TOKEN_BROKER_SOCKET", &socket)
                    .env("KUBERNETES_EXEC_INFO", &info);
                c
            }
        }),
    };
    let mut candidates = vec![
        shim_candidate("broker-shim", shim),
        Candidate {
            name: "cat".into(),
            command: Box::new({
                let home = home.clone();
                move || {
                    let mut c = bare(&cat, &home);
                    c.arg(&small_file);
                    c
                }
            }),
        },
    ];
    let gke = which("gke-gcloud-auth-plugin").map(|gke| {
        let gke_home = gke_home(sandbox.root());
        candidates.push(Candidate {
            name: "gke-gcloud-auth-plugin".into(),
            command: Box::new(move || bare(&gke, &gke_home)),
        });
        candidates.len() - 1
    });
    let before = baseline.map(|b| {
        candidates.push(shim_candidate("baseline broker-shim", b.shim.clone()));
        candidates.len() - 1
    });
    let rounds = scale.pick(600, 100);
    let samples = compare(&candidates, 20, rounds);
    let shim = &samples[0];
    let cat = &samples[1];
    let mut rows = vec![Row::new(
        "shim: start to ExecCredential, median",
        format!("{} (p90 {})", ms(shim.median()), ms(shim.quantile(0.9))),
        "≤ 1.5 ms",
        format!("{rounds} rounds"),
        Some(shim.median().as_secs_f64() <= 0.0015),
    )];
    let ratio = shim.median().as_secs_f64() / cat.median().as_secs_f64();
    rows.push(Row::new(
        "shim ÷ cat of a small file (medians)",
        format!("{ratio:.2}×"),
        "≤ 1.3×",
        format!("cat {}", ms(cat.median())),
        Some(ratio <= 1.3),
    ));
    match gke.map(|i| &samples[i]) {
        Some(gke) => {
            let ratio = shim.median().as_secs_f64() / gke.median().as_secs_f64();
            rows.push(Row::new(
                "shim ÷ gke-gcloud-auth-plugin from its cache (medians)",
                format!("{ratio:.2}×"),
                "≤ 0.35×",
                format!("gke-gcloud-auth-plugin {}", ms(gke.median())),
                Some(ratio <= 0.35),
            ));
        }
        None => rows.push(Row::new(
            "shim ÷ gke-gcloud-auth-plugin from its cache (medians)",
            "not measured".into(),
            "≤ 0.35×",
            "gke-gcloud-auth-plugin is not installed".into(),
            None,
        )),
    }
    if let Some(before) = before.map(|i| &samples[i]) {
        let ratio = shim.median().as_secs_f64() / before.median().as_secs_f64();
        rows.push(Row::new(
            "shim ÷ the baseline's shim, same brokerd (medians)",
            format!("{ratio:.2}×"),
            &format!("no worse (≤ {NO_WORSE}×)"),
            format!("baseline shim {}", ms(before.median())),
            Some(ratio <= NO_WORSE),
        ));
    }
    rows
}

/// `kubectl get --raw /api` through the shim, and with a static token in the kubeconfig.
pub fn kubectl(sandbox: &Sandbox, mock: &MockEntra, scale: Scale) -> Row {
    const NAME: &str = "kubectl get --raw /api: shim ÷ static token (medians)";
    let Some(kubectl) = which("kubectl").filter(|_| on_path("kubectl")) else {
        return Row::new(
            NAME,
            "not measured".into(),
            "≤ 1.03×",
            "kubectl is not installed".into(),
            None,
        );
    };
    let api = FakeApiServer::start(mock.shared_state());
    let token = mock.mint_user_token(AKS_SERVER_ID, 3600);
    let args: Vec<String> = std::iter::once("get-token".to_string())
        .chain(session_args(mock))
        .map(|a| format!("{a:?}"))
        .collect();
    let config = sandbox.root().join("bench-kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: shim\n  user:\n    exec:\n      \
             apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [{}]\n      \
             interactiveMode: Never\n- name: static\n  user:\n    token: {token}\ncontexts:\n\
             - name: shim\n  context: {{cluster: fake, user: shim}}\n- name: static\n  context: \
             {{cluster: fake, user: static}}\ncurrent-context: shim\n",
            api.url(),
            base64_encode(api.ca_pem().as_bytes()),
            binaries().shim.display(),
            args.join(", ")
        ),
    )
    .expect("kubeconfig");
    let socket = sandbox.socket.clone();
    let home = sandbox.home.clone();
    let run = move |context: &'static str| -> Box<dyn Fn() -> Command> {
        let (kubectl, config, socket, home) = (
            kubectl.clone(),
            config.clone(),
            socket.clone(),
            home.clone(),
        );
        Box::new(move || {
            let mut c = bare(&kubectl, &home);
            c.arg("--kubeconfig")
                .arg(&config)
                .args(["--context", context, "get", "--raw", "/api"])
                .env("TOKEN_BROKER_SOCKET", &socket);
            c
        })
    };
    let candidates = vec![
        Candidate {
            name: "shim".into(),
            command: run("shim"),
        },
        Candidate {
            name: "static".into(),
            command: run("static"),
        },
    ];
    let rounds = scale.pick(200, 15);
    let samples = compare(&candidates, 3, rounds);
    let ratio = samples[0].median().as_secs_f64() / samples[1].median().as_secs_f64();
    Row::new(
        NAME,
        format!("{ratio:.3}×"),
        "≤ 1.03×",
        format!(
            "shim {}, static token {} ({rounds} rounds)",
            ms(samples[0].median()),
            ms(samples[1].median())
        ),
        Some(ratio <= 1.03),
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
