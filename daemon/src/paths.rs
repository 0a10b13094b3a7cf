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
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join("brokerd.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 4 * 1024 * 1024) {
        std::fs::rename(&path, dir.join("brokerd.log.1"))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
