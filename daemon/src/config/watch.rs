//! The configuration in force, and its hot reload: a `notify` watch on the file's directory
//! (editors replace files by renaming, so watching the file itself would lose it) and SIGHUP.
//! A reload that fails keeps the configuration in force and records why, for the log and for
//! `brokerctl status`.
//!
//! On a fresh install the directory does not exist yet: `brokerctl login --profile X` creates
//! it later. So the watch is on the nearest directory that exists, and moves down as the ones
//! below it appear.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::{Config, ConfigError};

/// Editors write a file in several steps; changes this close together are one reload.
const SETTLE: Duration = Duration::from_millis(200);

/// What `status` says about the configuration.
#[derive(Clone, Debug)]
pub struct ConfigStatus {
    pub path: PathBuf,
    pub loaded_at: SystemTime,
    pub error: Option<String>,
}

/// The configuration in force. Readers borrow it; [`Settings::subscribe`] tells when it changes.
pub struct Settings {
    path: PathBuf,
    current: watch::Sender<Arc<Config>>,
    status: Mutex<ConfigStatus>,
}

impl Settings {
    /// Loads `path` (a missing file is the defaults); fails on an invalid file.
    pub fn load(path: PathBuf) -> Result<Self, ConfigError> {
        let config = Config::load(&path)?;
        Ok(Self::with(path, config))
    }

    /// Settings with a given configuration, for tests and embedding.
    pub fn with(path: PathBuf, config: Config) -> Self {
        Settings {
            status: Mutex::new(ConfigStatus {
                path: path.clone(),
                loaded_at: SystemTime::now(),
                error: None,
            }),
            path,
            current: watch::Sender::new(Arc::new(config)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in force.
    pub fn get(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    pub fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the file again. On success the new configuration is in force; on failure the old
    /// one stays and the error is kept for `status`.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.reload_telling(true)
    }

    /// [`Settings::reload`], saying nothing when nothing changed: for a look at the file on
    /// the way to an answer (a profile the caller names that is not in force yet).
    pub fn reload_quietly(&self) -> Result<(), ConfigError> {
        self.reload_telling(false)
    }

    fn reload_telling(&self, always: bool) -> Result<(), ConfigError> {
        let result = Config::load(&self.path);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(config) => {
                let changed = **self.current.borrow() != config;
                self.current.send_replace(Arc::new(config));
                status.loaded_at = SystemTime::now();
                status.error = None;
                if changed || always {
                    tracing::info!(
                        "configuration reloaded from {}{}",
                        self.path.display(),
                        if changed { "" } else { " (unchanged)" }
                    );
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    "configuration NOT reloaded, the previous one stays in force: {error}"
                );
                status.error = Some(error.to_string());
                Err(error)
            }
        }
    }
}

/// Reloads `settings` whenever its file changes or brokerd gets SIGHUP, until the runtime ends.
pub fn spawn_reloader(settings: Arc<Settings>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watch = FileWatch::new(settings.path().to_path_buf(), tx.clone());
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let a burst of file events settle into one reload.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            // A directory on the way to the file may have appeared: watch closer to it.
            watch.follow();
            let _ = settings.reload();
        }
    });
    #[cfg(windows)]
    drop(tx);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("cannot watch SIGHUP: {e}"),
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = tx.try_send(());
        }
    });
}

/// A watch on the configuration file's nearest existing directory.
struct FileWatch {
    path: PathBuf,
    tx: mpsc::Sender<()>,
    watcher: Option<(notify::RecommendedWatcher, PathBuf)>,
}

impl FileWatch {
    fn new(path: PathBuf, tx: mpsc::Sender<()>) -> Self {
        let mut watch = FileWatch {
            path,
            tx,
            watcher: None,
        };
        watch.follow();
        watch
    }

    /// The directory to watch: the file's own, or the nearest one above it that exists.
    fn nearest_dir(&self) -> Option<PathBuf> {
        self.path
            .ancestors()
            .skip(1)
            .find(|dir| !dir.as_os_str().is_empty() && dir.is_dir())
            .map(Path::to_path_buf)
    }

    /// Watches the nearest existing directory, if that is not the one watched already.
    fn follow(&mut self) {
        use notify::{RecursiveMode, Watcher};
        let Some(dir) = self.nearest_dir() else {
            return;
        };
        if self.watcher.as_ref().is_some_and(|(_, d)| *d == dir) {
            return;
        }
        // Events about the file, or about a directory on the way to it.
        let path = self.path.clone();
        let tx = self.tx.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
                && event.paths.iter().any(|p| path.starts_with(p))
            {
                let _ = tx.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} for changes ({e}); SIGHUP reloads",
                    dir.display()
                );
                return;
            }
        };
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                if self.path.parent() == Some(dir.as_path()) {
                    tracing::info!("watching {} for changes", self.path.display());
                } else {
                    tracing::info!(
                        "watching {} until {} appears",
                        dir.display(),
                        self.path.display()
                    );
                }
                self.watcher = Some((watcher, dir));
            }
            Err(e) => tracing::warn!(
                "cannot watch {} for changes ({e}); SIGHUP reloads",
                dir.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_reload_keeps_the_configuration_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[refresh]\nmax_concurrent = 7\n").unwrap();
        let settings = Settings::load(path.clone()).unwrap();
        assert_eq!(settings.get().refresh.max_concurrent, 7);

        std::fs::write(&path, "[refresh]\nmax_concurrent = \"seven\"\n").unwrap();
        assert!(settings.reload().is_err());
        assert_eq!(settings.get().refresh.max_concurrent, 7);
        let error = settings.status().error.unwrap();
        assert!(error.contains("max_concurrent"), "{error}");

        std::fs::write(&path, "[refresh]\nmax_concurrent = 9\n").unwrap();
        settings.reload().unwrap();
        assert_eq!(settings.get().refresh.max_concurrent, 9);
        assert!(settings.status().error.is_none());
    }
}
