//! A real OpenSSH server on loopback, with a second local user as "the remote machine": where
//! a forwarded brokerd is used. Needs root (sshd, and reading the other user's files), Debian's
//! openssh-server and openssh-client, and the user `tb-remote` (`.ci/run` makes it:
//! `useradd --create-home tb-remote`).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{binaries, on_path};

/// The user the remote side runs as.
pub const REMOTE_USER: &str = "tb-remote";

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd for `REMOTE_USER` on 127.0.0.1, and the client settings that reach it.
pub struct Sshd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the forwards left on the remote side.
        if let Some(dir) = remote_socket_dir() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The remote user's uid, if the user exists.
pub fn remote_uid() -> Option<u32> {
    let output = Command::new("id").args(["-u", REMOTE_USER]).output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// The remote user's home.
pub fn remote_home() -> PathBuf {
    PathBuf::from(format!("/home/{REMOTE_USER}"))
}

/// Where broker-shim looks for brokerd on the remote side, logged in over ssh without PAM:
/// no `XDG_RUNTIME_DIR`, so `/tmp/token-broker-<uid>/`.
pub fn remote_socket_dir() -> Option<PathBuf> {
    remote_uid().map(|uid| PathBuf::from(format!("/tmp/token-broker-{uid}")))
}

impl Sshd {
    /// Whether the pieces are here.
    pub fn available() -> bool {
        rustix::process::geteuid().is_root()
            && Path::new(SSHD).is_file()
            && on_path("ssh")
            && on_path("ssh-keygen")
            && remote_uid().is_some()
    }

    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tb-sshd-")
            .tempdir()
            .expect("tempdir");
        // sshd reads the authorized keys as the user: everything here must be readable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let keygen = |path: &Path| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .expect("ssh-keygen runs");
            assert!(status.success());
        };
        keygen(&dir.path().join("host"));
        keygen(&dir.path().join("client"));
        let authorized = dir.path().join(format!("authorized_keys_{REMOTE_USER}"));
        std::fs::copy(dir.path().join("client.pub"), &authorized).expect("authorized keys");
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        // The remote side's programs: broker-shim and brokerctl, and no brokerd.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for program in [&binaries().shim, &binaries().brokerctl] {
            install(&bin, program);
        }

        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host\n\
                 PidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys_%u\n\
                 AllowUsers {REMOTE_USER}\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAllowStreamLocalForwarding yes\n\
                 StreamLocalBindUnlink no\nLogLevel ERROR\n",
                dir = dir.path().display()
            ),
        )
        .expect("sshd_config");
        // Privilege separation wants its empty directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let sshd = Sshd { child, port, dir };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `user@host` for ssh.
    pub fn destination(&self) -> String {
        format!("{REMOTE_USER}@127.0.0.1")
    }

    /// ssh options that reach this server with the test's key and no user configuration.
    pub fn options(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-p",
            &self.port.to_string(),
            "-i",
            &self.dir.path().join("client").display().to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The remote side's copy of `program` (broker-shim, brokerctl).
    pub fn remote_program(&self, program: &str) -> String {
        self.dir
            .path()
            .join("bin")
            .join(program)
            .display()
            .to_string()
    }

    /// Copies `program` where the remote user can run it; its path there.
    pub fn install_remote(&self, program: &Path) -> PathBuf {
        install(&self.dir.path().join("bin"), program)
    }

    /// Runs `command` on the remote side over plain ssh (no forward).
    pub fn run(&self, command: &[&str]) -> std::process::Output {
        Command::new("ssh")
            .args(self.options())
            .arg(self.destination())
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs")
    }
}

/// `program` copied into `bin`, runnable by anyone.
fn install(bin: &Path, program: &Path) -> PathBuf {
    let to = bin.join(program.file_name().expect("a file name"));
    std::fs::copy(program, &to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", program.display(), to.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
