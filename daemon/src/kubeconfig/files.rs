//! Which kubeconfig files there are, found as kubectl finds them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The kubeconfig files, as kubectl finds them: `explicit`, else every file of `KUBECONFIG`,
/// else `~/.kube/config`. `None` when there is no home directory to look in.
pub fn kubeconfig_files(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<Vec<PathBuf>> {
    if let Some(path) = explicit {
        return Some(vec![path.to_path_buf()]);
    }
    if let Some(list) = env("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return Some(paths);
        }
    }
    let home = directories::BaseDirs::new()?;
    Some(vec![home.home_dir().join(".kube").join("config")])
}
