//! Where brokerd keeps its files, following the XDG base directory rules (and their macOS
//! equivalents through the `directories` crate).

use std::path::PathBuf;

const APP: &str = "token-broker";

/// The systemd user units brokerd is installed as (see packaging/systemd).
pub const SYSTEMD_UNITS: [&str; 2] = ["token-broker.socket", "token-broker.service"];

/// The launchd label of brokerd's LaunchAgent (see packaging/launchd).
pub const LAUNCHD_LABEL: &str = "dev.token-broker.brokerd";

/// The state directory for the session index: `$XDG_STATE_HOME/token-broker`
/// (`~/.local/state/token-broker`), or `~/Library/Application Support/token-broker` on macOS.
pub fn state_dir() -> Option<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", APP)?;
    Some(
        dirs.state_dir()
            .map(PathBuf::from)
            .unwrap_or_else(|| dirs.data_local_dir().to_path_buf()),
    )
}

/// Where a brokerd started on demand keeps brokerd.log: the state directory, or on macOS
/// `~/Library/Logs/token-broker`, where Console.app looks and where the LaunchAgent's brokerd
/// logs too, so that one file holds both.
pub fn log_dir() -> Option<PathBuf> {
    if cfg!(target_os = "macos") {
        let home = directories::BaseDirs::new()?.home_dir().to_path_buf();
        return Some(home.join("Library/Logs").join(APP));
    }
    state_dir()
}

/// brokerd.log in `dir`, for a brokerd started on demand, which has no terminal or journal to
/// log to. Appended to; a log past 4 MiB is moved to brokerd.log.1 first, so there are never
/// more than two.
pub fn open_log(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    create_private_dir(dir)?;
    let path = dir.join("brokerd.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 4 * 1024 * 1024) {
        std::fs::rename(&path, dir.join("brokerd.log.1"))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` and the directories above it, private to the user: mode 0700 on Unix. On
/// Windows brokerd's directories are under `%LOCALAPPDATA%`, whose access list (the user,
/// SYSTEM and Administrators) they inherit; nothing narrower is set.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes `file` readable and writable by the user alone (0600) on Unix; on Windows it keeps
/// the access list it inherited from its directory ([`create_private_dir`]).
pub fn make_private(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(windows)]
    {
        let _ = file;
        Ok(())
    }
}
