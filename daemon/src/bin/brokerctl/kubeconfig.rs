//! `brokerctl kubeconfig convert`: the files, the backups, the diff and the keyring hand-off
//! around `brokerd::kubeconfig::convert`.
//!
//! The secrets a converted user held go to brokerd's secret store before the file loses them.
//! The backup kept beside the file is the original without them: each is a placeholder naming
//! its keyring entry, which `--undo` reads back. So no secret token-broker took is left in a
//! file, and undo still puts the file back as it was.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::output::{out, outln};
use anyhow::{Context, Result, bail};
use broker_proto::v1;
use brokerd::doctor::kubeconfigs::kubeconfig_flag;
use brokerd::kubeconfig::{
    Conversion, ConvertOptions, backup_text, convert, kubeconfig_files, masked_diff, placeholders,
    restore,
};
use brokerd::store::{KeyringStore, SecretStore};
use clap::Args;

const BACKUP_TAG: &str = ".token-broker-backup-";

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The kubeconfig to convert [default: every file of $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Convert only the user of this context
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Show what would change; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Put back the newest backup that convert made
    #[arg(long, conflicts_with_all = ["context", "dry_run"])]
    undo: bool,
    /// The command converted users run [default: broker-shim if it is on PATH, else the
    /// broker-shim next to brokerctl]
    #[arg(long, value_name = "PATH")]
    shim: Option<String>,
    /// Move secrets even into a brokerd that keeps them in memory only (`--store memory`),
    /// where they are gone when it stops
    #[arg(long)]
    allow_memory_store: bool,
}

fn shim_command(explicit: Option<&str>) -> String {
    if let Some(command) = explicit {
        return command.to_string();
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("broker-shim").is_file())
    });
    if !on_path
        && let Ok(me) = std::env::current_exe()
        && let Some(sibling) = me.parent().map(|d| d.join("broker-shim"))
        && sibling.is_file()
    {
        return sibling.display().to_string();
    }
    "broker-shim".to_string()
}

pub async fn run(args: ConvertArgs, socket: &Path) -> Result<ExitCode> {
    let files = kubeconfig_files(args.kubeconfig.as_deref(), &|name| std::env::var_os(name))
        .context("cannot find the home directory")?;
    let again = kubeconfig_flag(args.kubeconfig.as_deref());
    if args.undo {
        return undo(&files, socket).await;
    }
    let command = shim_command(args.shim.as_deref());
    let env = |name: &str| std::env::var(name).ok();
    let options = ConvertOptions {
        context: args.context.as_deref(),
        command: &command,
        env: &env,
    };
    let mut plans: Vec<(PathBuf, String, Conversion)> = Vec::new();
    let mut context_found = args.context.is_none();
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            // kubectl skips files of $KUBECONFIG that do not exist; so does this.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && files.len() > 1 => continue,
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let conversion = match convert(&text, &options) {
            Ok(c) => c,
            Err(brokerd::kubeconfig::KubeconfigError::NoSuchContext(_)) if files.len() > 1 => {
                continue;
            }
            Err(e) => bail!("{}: {e}", path.display()),
        };
        context_found = true;
        plans.push((path.clone(), text, conversion));
    }
    if !context_found {
        bail!(
            "no context named {:?} in {}",
            args.context.unwrap_or_default(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let mut any_change = false;
    for (path, text, conversion) in &plans {
        report(path, text, conversion);
        any_change |= conversion.changed();
    }
    if !any_change {
        outln!("Nothing to convert.");
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        outln!("Dry run: nothing was written.");
        return Ok(ExitCode::SUCCESS);
    }

    // Secrets go to the store before the file loses them, so that nothing is lost if brokerd
    // cannot take them.
    let secrets: Vec<_> = plans
        .iter()
        .flat_map(|(_, _, c)| c.converted.iter())
        .filter(|c| c.has_secrets())
        .collect();
    let mut sessions: std::collections::HashMap<String, String> = Default::default();
    if !secrets.is_empty() {
        let mut client = crate::connect(socket).await.context(
            "brokerd must be running to keep the secrets this kubeconfig holds in the keyring",
        )?;
        let store = client
            .status(v1::StatusRequest {})
            .await?
            .into_inner()
            .secret_store;
        if store == "memory" && !args.allow_memory_store {
            bail!(
                "the running brokerd keeps secrets in memory only (--store memory): the secrets \
                 of this kubeconfig would be gone when it stops; nothing was changed (run \
                 brokerd with the keyring, or pass --allow-memory-store)"
            );
        }
        for converted in secrets {
            let id = client
                .remember(v1::RememberRequest {
                    spec: Some(converted.spec.clone()),
                    credentials: Some(converted.secrets.clone()),
                })
                .await
                .map_err(|s| anyhow::anyhow!(broker_proto::error_message(&s)))?
                .into_inner()
                .session_id;
            outln!(
                "Moved the secrets of user {} into {} (session {id}).",
                converted.user,
                store_words(&store)
            );
            sessions.insert(converted.user.clone(), id);
        }
    }
    for (path, text, conversion) in &plans {
        if !conversion.changed() {
            continue;
        }
        // Converted users without secrets have only dropped tokens to leave out of the backup.
        let session_of = |user: &str| {
            conversion
                .converted
                .iter()
                .any(|c| c.user == user)
                .then(|| sessions.get(user).cloned().unwrap_or_default())
        };
        let backup_content = backup_text(text, &session_of)
            .with_context(|| format!("cannot make the backup of {}", path.display()))?;
        let backup = write_with_backup(path, &backup_content, &conversion.text)?;
        outln!(
            "Converted {} user(s) in {}; the original is in {}{} (undo: brokerctl kubeconfig \
             convert --undo{again}).",
            conversion.converted.len(),
            path.display(),
            backup.display(),
            if placeholders(&backup_content).is_empty() {
                ""
            } else {
                ", its secrets replaced by the names of their keyring entries"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How a message names brokerd's store.
fn store_words(backend: &str) -> String {
    if backend == "memory" {
        "brokerd's memory (forgotten when it stops)".to_string()
    } else {
        format!("the keyring ({backend})")
    }
}

fn report(path: &Path, text: &str, conversion: &Conversion) {
    for c in &conversion.converted {
        outln!(
            "{}: user {} ({}) → broker-shim",
            path.display(),
            c.user,
            c.origin
        );
        if !c.dropped.is_empty() {
            outln!(
                "  dropped {} token(s) the legacy auth-provider kept in the file",
                c.dropped.len()
            );
        }
    }
    for s in &conversion.skipped {
        outln!(
            "{}: user {} left as it is: {}",
            path.display(),
            s.user,
            s.why
        );
    }
    if conversion.changed() {
        let secrets: Vec<&str> = conversion
            .converted
            .iter()
            .flat_map(|c| c.secret_values())
            .collect();
        out!(
            "{}",
            masked_diff(
                &path.display().to_string(),
                text,
                &conversion.text,
                &secrets
            )
        );
    }
}

/// Writes `backup` beside the file (0600: it still holds whatever credentials the file keeps),
/// then replaces the file atomically with `new`, keeping its permissions.
fn write_with_backup(path: &Path, backup_content: &str, new: &str) -> Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut backup = PathBuf::from(format!("{}{BACKUP_TAG}{now}", path.display()));
    let mut n = 1;
    while backup.exists() {
        backup = PathBuf::from(format!("{}{BACKUP_TAG}{now}-{n}", path.display()));
        n += 1;
    }
    let mode = file_mode(path);
    write_atomic(&backup, backup_content, 0o600)
        .with_context(|| format!("cannot write the backup {}", backup.display()))?;
    write_atomic(path, new, mode).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(backup)
}

/// The permission bits of `path` (0600 when it cannot be read), for its replacement to keep.
#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600)
}

/// Windows has no mode bits: the replacement inherits its directory's access list.
#[cfg(windows)]
fn file_mode(_path: &Path) -> u32 {
    0o600
}

fn write_atomic(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(windows)]
    let _ = mode;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Puts back, for each file, the newest backup convert made, its secrets read back from the
/// keyring. Nothing is written unless every secret is there.
async fn undo(files: &[PathBuf], socket: &Path) -> Result<ExitCode> {
    let mut restored = 0;
    let mut store: Option<Box<dyn SecretStore>> = None;
    for path in files {
        let Some(backup) = newest_backup(path)? else {
            continue;
        };
        let text = std::fs::read_to_string(&backup)
            .with_context(|| format!("cannot read {}", backup.display()))?;
        let original = if placeholders(&text).is_empty() {
            text
        } else {
            if store.is_none() {
                store = Some(secret_store(socket).await?);
            }
            let store = store.as_deref().context("no secret store")?;
            let secret = |key: &str| {
                use secrecy::ExposeSecret;
                store
                    .load(key)
                    .map(|s| s.map(|s| s.expose_secret().to_string()))
                    .map_err(|e| e.to_string())
            };
            restore(&text, &secret).map_err(|e| {
                anyhow::anyhow!(
                    "cannot undo {}: {e}; {} is left as it is",
                    backup.display(),
                    path.display()
                )
            })?
        };
        let mode = file_mode(path);
        write_atomic(path, &original, mode)
            .with_context(|| format!("cannot restore {}", path.display()))?;
        std::fs::remove_file(&backup)
            .with_context(|| format!("cannot remove {}", backup.display()))?;
        outln!("Restored {} from {}.", path.display(), backup.display());
        restored += 1;
    }
    if restored == 0 {
        bail!(
            "no backup from brokerctl kubeconfig convert next to {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The store brokerd keeps secrets in, to read a backup's secrets back from: the OS keyring,
/// which brokerctl opens itself (the same user's keyring). A brokerd on `--store memory` holds
/// them where nobody else can read them.
async fn secret_store(socket: &Path) -> Result<Box<dyn SecretStore>> {
    if let Ok(mut client) = broker_proto::connect(socket).await
        && let Ok(status) = client.status(v1::StatusRequest {}).await
        && status.get_ref().secret_store == "memory"
    {
        bail!(
            "the running brokerd keeps secrets in memory (--store memory), where brokerctl \
             cannot read them back; the backup's secrets cannot be put back"
        );
    }
    Ok(Box::new(KeyringStore::new()))
}

fn newest_backup(path: &Path) -> Result<Option<PathBuf>> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let prefix = format!("{name}{BACKUP_TAG}");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(None),
    };
    let mut backups: Vec<(u64, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let stamp = file.strip_prefix(&prefix)?;
            let (secs, n) = match stamp.split_once('-') {
                Some((s, n)) => (s.parse().ok()?, n.parse().ok()?),
                None => (stamp.parse().ok()?, 0),
            };
            Some((secs, n, e.path()))
        })
        .collect();
    backups.sort();
    Ok(backups.pop().map(|(_, _, p)| p))
}
