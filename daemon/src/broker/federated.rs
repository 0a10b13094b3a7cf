//! Watching workload identity's federated token files. The kubelet rotates the projected token
//! (swapping a `..data` symlink in its directory, so the file name itself may not appear in the
//! event); when anything in such a directory changes, sessions that were refused or backing off
//! with the old token try again at once instead of waiting for a new login or the backoff.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::Broker;

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
        use notify::Watcher;
        let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return;
        };
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
                            if let Some(dir) = path.parent() {
                                let _ = tx.send(dir.to_path_buf());
                            }
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
                        while let Some(dir) = rx.recv().await {
                            me.federated_dir_changed(&dir);
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
                tracing::info!("watching {} for federated token rotation", dir.display());
                watching.dirs.insert(dir.to_path_buf());
            }
            Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
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
