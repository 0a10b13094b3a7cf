//! Someone else's socket where brokerd's should be: another user who made the socket's
//! directory first (there is no XDG_RUNTIME_DIR, so it is under the shared temp dir), a
//! listener of another uid, a socket below a directory others can write. broker-shim and
//! brokerctl refuse each with one line before they send a byte (a client secret, a password,
//! a login), and brokerd refuses to serve there.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use broker_tests::harness::{
    EXEC_V1, Sandbox, binaries, exec_info, failure, is_root, on_path, require,
};
use broker_tests::mock_entra::{AKS_SERVER_ID, TENANT_ID};

const NOBODY: u32 = 65534;

/// A listener that counts the connections it gets and the bytes they send.
struct Impostor {
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    _path: PathBuf,
}

impl Impostor {
    fn listen(path: &Path) -> Self {
        let listener = UnixListener::bind(path).expect("the impostor listens");
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (c, b) = (connections.clone(), bytes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        b.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        Impostor {
            connections,
            bytes,
            _path: path.to_path_buf(),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The connections accepted so far, once `expected` have been or after five seconds. A
    /// client's `connect` returns as soon as the kernel queues it, which can be before this
    /// listener's thread has accepted and counted it.
    fn connections_once(&self, expected: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.connections() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.connections()
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

fn private_dir(path: &Path) {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn spn_args() -> Vec<&'static str> {
    vec![
        "--login",
        "spn",
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        "11111111-2222-3333-4444-000000000001",
        "--authority-host",
        "http://127.0.0.1:9/",
    ]
}

fn one_line(text: &str) -> &str {
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    text.trim_end()
}

#[test]
fn a_socket_directory_another_user_made_first_gets_nothing() {
    if !require("running as root (to act as another user)", is_root()) {
        return;
    }
    let mut sandbox = Sandbox::new();
    let socket = sandbox.without_runtime_dir();
    // Another user got there first: the directory is theirs, and something listens in it.
    let dir = socket.parent().unwrap();
    private_dir(dir);
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let impostor = Impostor::listen(&socket);
    std::os::unix::fs::chown(&socket, Some(NOBODY), Some(NOBODY)).unwrap();

    // The shim, with a client secret in its environment as kubectl would pass it.
    let mut shim = sandbox.command(&binaries().shim);
    shim.arg("get-token")
        .args(spn_args())
        .env("AZURE_CLIENT_SECRET", "the-client-secret")
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, true));
    let said = failure(&shim.output().unwrap(), "broker-shim");
    let line = one_line(&said);
    assert!(line.contains("refusing to talk to"), "{line}");
    assert!(line.contains(&format!("belongs to uid {NOBODY}")), "{line}");

    // brokerctl login with the secret piped in, as the README shows.
    let mut login = sandbox.command(&binaries().brokerctl);
    login
        .arg("login")
        .args(spn_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    {
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(b"the-client-secret\n");
    }
    let said = failure(&child.wait_with_output().unwrap(), "brokerctl login");
    assert!(
        one_line(&said).contains(&format!("belongs to uid {NOBODY}")),
        "{said}"
    );
    let status = failure(&sandbox.ctl(&["status"]), "brokerctl status");
    assert!(
        one_line(&status).contains("refusing to talk to"),
        "{status}"
    );

    // brokerd will not serve there either.
    let mut brokerd = sandbox.command(&binaries().brokerd);
    brokerd.args(["--store", "memory"]);
    let said = failure(&brokerd.output().unwrap(), "brokerd");
    assert!(said.contains(&format!("belongs to uid {NOBODY}")), "{said}");

    assert_eq!(
        impostor.connections(),
        0,
        "nobody connected to the impostor"
    );
    assert_eq!(impostor.bytes(), 0);
}

#[test]
fn a_listener_of_another_uid_is_refused_once_connected_before_a_byte_is_sent() {
    if !require(
        "running as root with setpriv (to be another uid)",
        is_root() && on_path("setpriv"),
    ) {
        return;
    }
    let sandbox = Sandbox::new();
    // The directory and the socket file are the user's (uid 65534), as they should be; but the
    // process listening is root's, not the user's brokerd.
    let dir = sandbox.root().join("nobody-run/token-broker");
    private_dir(&dir);
    std::os::unix::fs::chown(dir.parent().unwrap(), Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = dir.join("broker.sock");
    let impostor = Impostor::listen(&socket);
    std::os::unix::fs::chown(&socket, Some(NOBODY), Some(NOBODY)).unwrap();

    let shim = sandbox.root().join("shim-for-nobody");
    std::fs::copy(&binaries().shim, &shim).unwrap();
    let mut command = sandbox.command(Path::new("setpriv"));
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // Enough to reach into the sandbox (root's, 0700); not enough to matter here.
            "--inh-caps=+dac_read_search,+dac_override",
            "--ambient-caps=+dac_read_search,+dac_override",
        ])
        .arg(&shim)
        .arg("get-token")
        .args(spn_args())
        .env("TOKEN_BROKER_SOCKET", &socket)
        .env("AZURE_CLIENT_SECRET", "the-client-secret")
        .env("KUBERNETES_EXEC_INFO", exec_info(EXEC_V1, false));
    let said = failure(&command.output().unwrap(), "a shim running as uid 65534");
    let line = one_line(&said);
    assert!(
        line.contains("runs as uid 0, not as uid 65534: it is not your brokerd"),
        "{line}"
    );
    // It connected (that is how it learnt the peer's uid), and sent nothing.
    assert_eq!(impostor.connections_once(1), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(impostor.bytes(), 0, "not a byte reached the impostor");
}

#[test]
fn a_socket_below_a_directory_others_can_write_is_refused_by_brokerd_and_its_clients() {
    let mut sandbox = Sandbox::new();
    let shared = sandbox.root().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = shared.join("token-broker/broker.sock");
    sandbox.set_env("TOKEN_BROKER_SOCKET", &socket);
    sandbox.without_socket_env();

    let mut brokerd = sandbox.command(&binaries().brokerd);
    brokerd.args(["--store", "memory"]);
    let said = failure(&brokerd.output().unwrap(), "brokerd");
    assert!(said.contains(&shared.display().to_string()), "{said}");
    assert!(said.contains("can be changed by another user"), "{said}");

    // Whoever can write `shared` could have swapped in their own directory and listener.
    private_dir(socket.parent().unwrap());
    let impostor = Impostor::listen(&socket);
    let output = sandbox.shim(
        &["--server-id", AKS_SERVER_ID, "--tenant-id", TENANT_ID],
        Some(&exec_info(EXEC_V1, false)),
    );
    let said = failure(&output, "broker-shim");
    let line = one_line(&said);
    assert!(line.contains("refusing to talk to"), "{line}");
    assert!(line.contains("can be changed by another user"), "{line}");
    assert_eq!(impostor.connections(), 0);
}
