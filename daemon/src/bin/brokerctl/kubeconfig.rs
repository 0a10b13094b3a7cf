//! `brokerctl kubeconfig convert`: the files, the backups, the diff and the keyring hand-off
//! around `brokerd::kubeconfig::convert`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use broker_proto::v1;
use brokerd::kubeconfig::{Conversion, ConvertOptions, convert, kubeconfig_files, masked_diff};
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
    if args.undo {
        return undo(&files);
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
        println!("Nothing to convert.");
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        println!("Dry run: nothing was written.");
        return Ok(ExitCode::SUCCESS);
    }

    // Secrets go to the keyring before the file loses them, so that nothing is lost if brokerd
    // cannot take them.
    let secrets: Vec<_> = plans
        .iter()
        .flat_map(|(_, _, c)| c.converted.iter())
        .filter(|c| c.has_secrets())
        .collect();
    if !secrets.is_empty() {
        let mut client = crate::connect(socket).await.context(
            "brokerd must be running to keep the secrets this kubeconfig holds in the keyring",
        )?;
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
            println!(
                "Moved the secrets of user {} into the keyring (session {id}).",
                converted.user
            );
        }
    }
    for (path, text, conversion) in &plans {
        if !conversion.changed() {
            continue;
        }
        let backup = write_with_backup(path, text, &conversion.text)?;
        println!(
            "Converted {} user(s) in {}; the original is in {} (undo: brokerctl kubeconfig convert --undo).",
            conversion.converted.len(),
            path.display(),
            backup.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(path: &Path, text: &str, conversion: &Conversion) {
    for c in &conversion.converted {
        println!(
            "{}: user {} ({}) → broker-shim",
            path.display(),
            c.user,
            c.origin
        );
        if !c.dropped.is_empty() {
            println!(
                "  dropped {} token(s) the legacy auth-provider kept in the file",
                c.dropped.len()
            );
        }
    }
    for s in &conversion.skipped {
        println!(
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
        print!(
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

/// Copies the original to a backup (0600, as it may hold secrets), then replaces the file
/// atomically with `new`, keeping its permissions.
fn write_with_backup(path: &Path, old: &str, new: &str) -> Result<PathBuf> {
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
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    write_atomic(&backup, old, 0o600)
        .with_context(|| format!("cannot write the backup {}", backup.display()))?;
    write_atomic(path, new, mode).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(backup)
}

fn write_atomic(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Puts back, for each file, the newest backup convert made.
fn undo(files: &[PathBuf]) -> Result<ExitCode> {
    let mut restored = 0;
    for path in files {
        let Some(backup) = newest_backup(path)? else {
            continue;
        };
        std::fs::rename(&backup, path).with_context(|| {
            format!(
                "cannot restore {} from {}",
                path.display(),
                backup.display()
            )
        })?;
        println!("Restored {} from {}.", path.display(), backup.display());
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
