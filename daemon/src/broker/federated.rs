//! Watching the files other programs keep credentials in.
//!
//! - Workload identity's federated token files. The kubelet rotates the projected token
//!   (swapping a `..data` symlink in its directory, so the file name itself may not appear in
//!   the event); when anything in such a directory changes, sessions that were refused or
//!   backing off with the old token try again at once instead of waiting for a new login or the
//!   backoff.
//! - The Azure CLI's `azureProfile.json`, which `az login`, `az logout` and `az account set`
//!   rewrite: the tokens azurecli sessions hold for the account before are dropped at once, so
//!   that no kube context is served the old account's token (kubelogin served user A's token
//!   after `az logout`: Azure/kubelogin #137). `az account get-access-token` itself does not
//!   write that file, so brokerd's own runs of it do not echo back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::Broker;
use crate::spec::LoginMode;

/// The Azure CLI's configuration directory: `AZURE_CONFIG_DIR` as the session names it, else
/// `~/.azure`.
fn azure_config_dir(given: &str) -> Option<PathBuf> {
    if !given.is_empty() {
        return Some(PathBuf::from(given));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".azure"))
}

#[derive(Default)]
pub(super) struct FederatedFiles {
    inner: Mutex<Option<Watching>>,
}

struct Watching {
    watcher: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
}

impl Broker {
    /// Watches the directory of `file`, once. Needs a Tokio runtime (it spawns the handler).
    pub(super) fn watch_federated_file(&self, file: &Path) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.watch_dir(dir);
        }
    }

    /// Watches the Azure CLI configuration directory `dir` (empty: `~/.azure`), once.
    pub(super) fn watch_azure_config(&self, dir: &str) {
        match azure_config_dir(dir) {
            Some(dir) if dir.is_dir() => self.watch_dir(&dir),
            Some(dir) => tracing::debug!(
                "{} does not exist (yet): az logins there are not watched",
                dir.display()
            ),
            None => {}
        }
    }

    fn watch_dir(&self, dir: &Path) {
        use notify::Watcher;
        let mut inner = self
            .federated
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if inner.is_none() {
            let Some(me) = self.me() else { return };
            let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
            let watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if let Ok(event) = event
                        && !event.kind.is_access()
                    {
                        for path in event.paths {
                            let _ = tx.send(path);
                        }
                    }
                });
            match watcher {
                Ok(watcher) => {
                    *inner = Some(Watching {
                        watcher,
                        dirs: HashSet::new(),
                    });
                    tokio::spawn(async move {
                        while let Some(path) = rx.recv().await {
                            me.watched_path_changed(&path);
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("cannot watch federated token files: {e}");
                    return;
                }
            }
        }
        let Some(watching) = inner.as_mut() else {
            return;
        };
        if watching.dirs.contains(dir) {
            return;
        }
        match watching
            .watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                tracing::info!("watching {} for changed credentials", dir.display());
                watching.dirs.insert(dir.to_path_buf());
            }
            Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
        }
    }

    fn watched_path_changed(&self, path: &Path) {
        let Some(dir) = path.parent() else { return };
        self.federated_dir_changed(dir);
        if path.file_name().is_some_and(|n| n == "azureProfile.json") {
            self.azure_profile_changed(dir);
        }
    }

    /// `az` signed in, out, or to another subscription: azurecli sessions of that directory
    /// drop what they hold and ask `az` again at their next request.
    fn azure_profile_changed(&self, dir: &Path) {
        for session in self.all_sessions() {
            let spec = &session.spec;
            if spec.login_mode != LoginMode::AzureCli
                || azure_config_dir(&spec.azure_config_dir).as_deref() != Some(dir)
            {
                continue;
            }
            tracing::info!(
                "session {}: the Azure CLI's account changed; its token is dropped",
                session.id
            );
            session.forget_tokens();
            session.lift_refusal();
        }
    }

    /// Something in `dir` changed: sessions whose federated token file is there and that are
    /// stuck (refused, or backing off) may try again now.
    fn federated_dir_changed(&self, dir: &Path) {
        let mut woke = false;
        for session in self.all_sessions() {
            if session.federated_file_in(dir) && session.is_stuck() {
                tracing::info!(
                    "session {}: its federated token file changed; trying again",
                    session.id
                );
                session.lift_refusal();
                woke = true;
            }
        }
        if woke {
            self.wake_scheduler();
        }
    }
}
