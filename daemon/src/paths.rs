//! Where brokerd keeps its files, following the XDG base directory rules (and their macOS
//! equivalents through the `directories` crate).

use std::path::PathBuf;

const APP: &str = "token-broker";

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
