//! How brokerd is set up on this machine: its socket directory, and the user service that
//! starts it at login.

#[cfg(unix)]
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;

use super::{Check, Env};
#[cfg(unix)]
use crate::listener::{DirProblem, ListenError, check_private_dir};

/// Windows: the pipe brokerd serves on must be a local pipe; whose it is, is checked by every
/// client once connected (the server's user), which the daemon check above did.
#[cfg(windows)]
pub fn socket_dir(pipe: &Path) -> Check {
    if broker_proto::pipe::is_pipe_name(pipe) {
        Check::pass(
            "socket_dir",
            format!(
                "brokerd's pipe is {}; only your user may open it, and clients check that its \
                 server runs as you",
                pipe.display()
            ),
        )
    } else {
        Check::fail(
            "socket_dir",
            format!("{} is not a local pipe name", pipe.display()),
            "unset TOKEN_BROKER_SOCKET, or set it to \\\\.\\pipe\\NAME",
        )
    }
}

/// Windows: is brokerd started at logon (the user's Run key)?
#[cfg(windows)]
pub fn user_service(_env: Env<'_>) -> Check {
    match crate::run_key::installed() {
        Ok(Some(command)) => Check::pass(
            "user_service",
            format!(
                "brokerd starts at logon: HKCU\\{}\\{} = {command}",
                crate::run_key::RUN_KEY,
                crate::run_key::VALUE
            ),
        ),
        Ok(None) => Check::warn(
            "user_service",
            "nothing starts brokerd at logon (kubectl still starts it on demand)",
            "brokerctl service install",
        ),
        Err(e) => Check::fail(
            "user_service",
            format!("cannot read the Run key: {e}"),
            "check the registry permissions of HKEY_CURRENT_USER",
        ),
    }
}

/// The socket's directory must be ours and closed to others, as brokerd demands when it starts;
/// this catches a directory changed since, or one that will stop the next start.
#[cfg(unix)]
pub fn socket_dir(socket: &Path, uid: u32) -> Check {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Check::fail(
            "socket_dir",
            format!("the socket path {} has no directory", socket.display()),
            "give an absolute socket path (TOKEN_BROKER_SOCKET or --socket)",
        );
    };
    if !dir.exists() && std::fs::symlink_metadata(dir).is_err() {
        return Check::pass(
            "socket_dir",
            format!(
                "{} does not exist yet; brokerd creates it, mode 0700",
                dir.display()
            ),
        );
    }
    if let Err(e) = check_private_dir(dir, uid) {
        let fix = match &e {
            ListenError::Dir(DirProblem::Mode { path, .. }) => {
                format!("chmod 700 {}", path.display())
            }
            ListenError::Dir(DirProblem::Symlink { path } | DirProblem::NotADirectory { path }) => {
                format!(
                    "remove {} and restart brokerd, which creates it as a private directory",
                    path.display()
                )
            }
            ListenError::Dir(DirProblem::Owner { path, .. }) => format!(
                "someone else made {}: have it removed (its owner or root) and restart brokerd, \
                 or use a socket under your own XDG_RUNTIME_DIR",
                path.display()
            ),
            ListenError::Dir(DirProblem::OpenAncestor { path, .. }) => format!(
                "another user can change {}: use a socket under your own XDG_RUNTIME_DIR, or \
                 set TOKEN_BROKER_SOCKET to a path below directories only you (or root) can \
                 write",
                path.display()
            ),
            _ => "check the directory's permissions".to_string(),
        };
        return Check::fail("socket_dir", e.to_string(), fix);
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if !meta.file_type().is_socket() => Check::fail(
            "socket_dir",
            format!("{} is not a socket", socket.display()),
            format!("remove {} and restart brokerd", socket.display()),
        ),
        Ok(meta) if meta.uid() != uid || meta.mode() & 0o077 != 0 => Check::fail(
            "socket_dir",
            format!(
                "the socket {} is mode {:04o}, owned by uid {}",
                socket.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ),
            "restart brokerd, which recreates the socket 0600",
        ),
        Ok(_) => Check::pass(
            "socket_dir",
            format!(
                "{} is private (0700, yours); the socket is 0600",
                dir.display()
            ),
        ),
        Err(_) => Check::pass(
            "socket_dir",
            format!("{} is private (0700, yours)", dir.display()),
        ),
    }
}

/// Is brokerd installed as a user service that starts at login?
#[cfg(all(unix, not(target_os = "macos")))]
pub fn user_service(env: Env<'_>) -> Check {
    let home = env("HOME").map(PathBuf::from);
    let config_home = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    let data_home = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".local/share")));
    // systemd's user unit search path, the user's own directories first; enabling links a
    // unit into a `*.wants` directory of the user's (or the admin's global) configuration.
    let user_config = config_home.map(|c| c.join("systemd/user"));
    let mut unit_dirs: Vec<PathBuf> = user_config.iter().cloned().collect();
    unit_dirs.extend(data_home.map(|d| d.join("systemd/user")));
    unit_dirs.extend(
        [
            "/etc/systemd/user",
            "/usr/local/lib/systemd/user",
            "/usr/lib/systemd/user",
        ]
        .map(PathBuf::from),
    );
    let enable_dirs: Vec<PathBuf> = user_config
        .into_iter()
        .chain([PathBuf::from("/etc/systemd/user")])
        .collect();

    let installed: Vec<PathBuf> = crate::paths::SYSTEMD_UNITS
        .iter()
        .flat_map(|unit| unit_dirs.iter().map(move |d| d.join(unit)))
        .filter(|p| p.exists())
        .collect();
    if installed.is_empty() {
        return Check::warn(
            "user_service",
            "brokerd is not installed as a systemd user service, so nothing starts it at login",
            "brokerctl service install",
        );
    }
    let enabled = crate::paths::SYSTEMD_UNITS
        .iter()
        .find(|unit| enable_dirs.iter().any(|d| linked_in_wants(d, unit)));
    match enabled {
        Some(unit) => Check::pass(
            "user_service",
            format!("{unit} is enabled (from {})", installed[0].display()),
        ),
        None => Check::warn(
            "user_service",
            format!(
                "{} is installed but not enabled, so it does not start at login",
                installed[0].display()
            ),
            "systemctl --user enable --now token-broker.socket",
        ),
    }
}

#[cfg(all(unix, not(target_os = "macos")))]
fn linked_in_wants(dir: &Path, unit: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry.file_name().to_string_lossy().ends_with(".wants") && entry.path().join(unit).exists()
    })
}

#[cfg(target_os = "macos")]
pub fn user_service(env: Env<'_>) -> Check {
    let label = crate::paths::LAUNCHD_LABEL;
    let Some(home) = env("HOME").map(PathBuf::from) else {
        return Check::warn("user_service", "HOME is not set", "set HOME");
    };
    let plist = home.join(format!("Library/LaunchAgents/{label}.plist"));
    let socket = broker_proto::default_socket_path();
    launch_agent(&plist, broker_proto::socket::socket_dir(&socket))
}

/// The LaunchAgent: installed, and the directory launchd binds its socket in still there
/// (launchd does not make it; `brokerctl service install` does).
pub fn launch_agent(plist: &Path, socket_dir: Option<&Path>) -> Check {
    if !plist.exists() {
        return Check::warn(
            "user_service",
            "brokerd is not installed as a LaunchAgent, so nothing starts it at login",
            "brokerctl service install",
        );
    }
    match socket_dir {
        Some(dir) if !dir.is_dir() => Check::fail(
            "user_service",
            format!(
                "{} is installed, but {} is gone, so launchd cannot listen on the socket there",
                plist.display(),
                dir.display()
            ),
            "brokerctl service install (it makes the directory again)",
        ),
        _ => Check::pass(
            "user_service",
            format!(
                "{} is installed (launchd loads it at login and listens on the socket)",
                plist.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;

    #[test]
    fn a_launch_agent_without_its_socket_directory_fails_with_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let plist = home.path().join("dev.token-broker.brokerd.plist");
        let dir = home.path().join("token-broker-501");
        assert_eq!(launch_agent(&plist, Some(&dir)).level, Level::Warn);
        std::fs::write(&plist, "<plist/>").unwrap();
        let missing = launch_agent(&plist, Some(&dir));
        assert_eq!(missing.level, Level::Fail);
        assert!(missing.summary.contains("is gone"), "{}", missing.summary);
        assert!(missing.fix.unwrap().contains("brokerctl service install"));
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(launch_agent(&plist, Some(&dir)).level, Level::Pass);
    }
}
