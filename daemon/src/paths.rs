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
