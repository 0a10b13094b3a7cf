//! `brokerctl service install|uninstall|status|logs`: brokerd as a systemd user service (a
//! socket unit and a service unit) on Linux, a LaunchAgent on macOS, the user's Run key on
//! Windows (`brokerd::run_key`). Each step that changes
//! something is printed as it is done, as the command a person would have typed.

use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::Command;
use std::process::ExitCode;
#[cfg(unix)]
use std::time::{Duration, Instant};

#[cfg(unix)]
use crate::output::outln;
#[cfg(unix)]
use anyhow::bail;
use anyhow::{Context, Result};
#[cfg(unix)]
use brokerd::service::{OnFailure, Plan, Step};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write the user service for brokerd, enable it and start it (a brokerd already running
    /// outside it is stopped first, so the service takes over)
    Install {
        /// Stop a running brokerd even when it keeps its sessions in memory only
        /// (`--store memory`), which forgets them
        #[arg(long)]
        force: bool,
        /// Print the files the install would write and the commands it would run; change
        /// nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop, disable and remove the user service
    Uninstall,
    /// What the service manager says of the service
    Status,
    /// brokerd's log
    Logs {
        /// Keep printing as the log grows
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the last lines to show
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
    },
}

#[cfg(windows)]
pub async fn run(command: ServiceCommand, socket: &Path) -> Result<ExitCode> {
    windows::run(command, socket).await
}

#[cfg(unix)]
pub async fn run(command: ServiceCommand, socket: &Path) -> Result<ExitCode> {
    match command {
        ServiceCommand::Install { force, dry_run } => {
            // Everything that can stop the install is checked before anything changes: a
            // failed install must not leave the user with the running brokerd stopped.
            let brokerd = installed_brokerd()?;
            let plan = platform::plan(&brokerd, socket)?;
            if dry_run {
                show(&plan);
                return Ok(ExitCode::SUCCESS);
            }
            platform::manager()?;
            let running = running_brokerd(socket).await;
            if let Some(running) = &running
                && running.memory_sessions > 0
                && !force
            {
                bail!(
                    "the running brokerd (pid {}) keeps {} session(s) in memory only (--store \
                     memory): the service takes over by stopping it, and they would be lost; \
                     nothing was changed (sign in again afterwards: pass --force)",
                    running.pid,
                    running.memory_sessions
                );
            }
            if let Some(running) = running {
                stop_unmanaged_brokerd(running.pid).await?;
            }
            carry_out(&plan)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Uninstall => {
            platform::uninstall()?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Status => platform::status(socket).await,
        ServiceCommand::Logs { follow, lines } => platform::logs(follow, lines),
    }
}

#[cfg(unix)]
/// A brokerd answering on the socket: its pid, and how many sessions it would forget.
struct Running {
    pid: u32,
    memory_sessions: usize,
}

#[cfg(unix)]
async fn running_brokerd(socket: &Path) -> Option<Running> {
    let mut client = broker_proto::connect(socket).await.ok()?;
    let status = client
        .status(broker_proto::v1::StatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some(Running {
        pid: status.pid,
        memory_sessions: if status.secret_store == "memory" {
            status.sessions.len()
        } else {
            0
        },
    })
}

#[cfg(unix)]
/// Whether `pid` has exited and only waits to be reaped by its parent (a zombie holds no socket
/// and no lock).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            == Some("Z")
    })
}

#[cfg(unix)]
/// A brokerd started by hand or on demand holds the socket's lock: the service's brokerd
/// would find it taken. Stop it, and wait until it has let go.
async fn stop_unmanaged_brokerd(pid: u32) -> Result<()> {
    let Some(process) = rustix::process::Pid::from_raw(pid as i32) else {
        return Ok(());
    };
    rustix::process::kill_process(process, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot stop the running brokerd (pid {pid})"))?;
    // Not our child: nothing to wait on but its disappearance.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rustix::process::test_kill_process(process).is_ok() && !exited(pid) {
        if Instant::now() > deadline {
            bail!("the running brokerd (pid {pid}) did not stop within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outln!("Stopped the brokerd that ran outside the service (pid {pid}); the service takes over.");
    Ok(())
}

#[cfg(unix)]
/// What an install would do, for `--dry-run`.
fn show(plan: &Plan) {
    for step in &plan.steps {
        match step {
            Step::Dir { path, mode } => {
                outln!("Would create {} (mode {mode:04o})", path.display());
            }
            Step::File { path, text } => {
                outln!("Would write {}:", path.display());
                for line in text.lines() {
                    outln!("    {line}");
                }
            }
            Step::Run { argv, .. } => outln!("Would run: {}", argv.join(" ")),
        }
    }
}

#[cfg(unix)]
/// Carries out an install's steps in order, each printed as it is done. A failure stops it
/// with one line; what was written stays, and the line says where.
fn carry_out(plan: &Plan) -> Result<()> {
    let mut written: Vec<&Path> = Vec::new();
    let kept = |written: &[&Path]| {
        if written.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            format!(" (written and kept: {})", list.join(", "))
        }
    };
    for step in &plan.steps {
        match step {
            Step::Dir { path, mode } => make_dir(path, *mode)?,
            Step::File { path, text } => {
                write_file(path, text)?;
                written.push(path);
            }
            Step::Run { argv, on_failure } => {
                let Some((program, args)) = argv.split_first() else {
                    continue;
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut tries = 0;
                loop {
                    match (run_step(program, &args), on_failure) {
                        (Ok(()), _) => break,
                        (Err(_), OnFailure::Ignore) => break,
                        (
                            Err(StepError::Status { code, .. }),
                            OnFailure::Retry {
                                status,
                                times,
                                pause,
                            },
                        ) if code == Some(*status) && tries < *times => {
                            tries += 1;
                            std::thread::sleep(*pause);
                        }
                        (Err(e), _) => bail!("{e}{}", kept(&written)),
                    }
                }
            }
        }
    }
    outln!("{}", plan.done);
    Ok(())
}

#[cfg(unix)]
/// A directory the install needs, private when it makes it.
fn make_dir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    outln!("Created {}", path.display());
    Ok(())
}

/// A command of an install that did not succeed.
#[cfg(unix)]
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{shown}` failed ({status}): {said}")]
    Status {
        shown: String,
        status: std::process::ExitStatus,
        code: Option<i32>,
        said: String,
    },
}

#[cfg(unix)]
/// Runs `program args`, printing it first; a failure is one line with what it said.
fn run_step(program: &str, args: &[&str]) -> Result<(), StepError> {
    let shown = format!("{program} {}", args.join(" "));
    outln!("Running: {shown}");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| StepError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(StepError::Status {
            shown,
            status: output.status,
            code: output.status.code(),
            said: broker_proto::text::printable(said).into_owned(),
        });
    }
    Ok(())
}

#[cfg(unix)]
/// Runs `program args` with the terminal, for what people read directly (status, logs).
fn pass_through(program: &str, args: &[&str]) -> Result<ExitCode> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(unix)]
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    outln!("Wrote {}", path.display());
    Ok(())
}

/// Windows: the Run key (`brokerd::run_key`); brokerd itself runs windowless, logging to its
/// file.
#[cfg(windows)]
mod windows {
    use std::io::{BufRead, Seek};
    use std::path::Path;
    use std::process::ExitCode;

    use anyhow::{Context, Result};
    use brokerd::run_key::{self, RUN_KEY, VALUE};

    use super::{ServiceCommand, installed_brokerd};
    use crate::output::outln;

    pub async fn run(command: ServiceCommand, socket: &Path) -> Result<ExitCode> {
        match command {
            ServiceCommand::Install { force: _, dry_run } => {
                let command = run_key::command(&installed_brokerd()?);
                if dry_run {
                    outln!(
                        "reg add HKCU\\{RUN_KEY} /v {VALUE} /t REG_SZ /d {}",
                        quoted(&command)
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                run_key::install(&command)
                    .with_context(|| format!("cannot write HKCU\\{RUN_KEY}\\{VALUE}"))?;
                outln!("Wrote HKCU\\{RUN_KEY}\\{VALUE} = {command}");
                // Serving now, not only from the next logon: started as kubectl would.
                match broker_proto::connect_or_start(socket).await {
                    Ok(_) => outln!("brokerd serves on {}", socket.display()),
                    Err(e) => {
                        outln!("brokerd is not running now ({e}); it starts at the next logon")
                    }
                }
                outln!("brokerd starts at logon, without a window.");
                Ok(ExitCode::SUCCESS)
            }
            ServiceCommand::Uninstall => {
                if run_key::uninstall()
                    .with_context(|| format!("cannot remove HKCU\\{RUN_KEY}\\{VALUE}"))?
                {
                    outln!("Removed HKCU\\{RUN_KEY}\\{VALUE}; brokerd no longer starts at logon");
                } else {
                    outln!("Nothing to remove: HKCU\\{RUN_KEY} has no {VALUE} value");
                }
                Ok(ExitCode::SUCCESS)
            }
            ServiceCommand::Status => {
                let installed = run_key::installed().context("cannot read the Run key")?;
                match &installed {
                    Some(command) => outln!("installed: HKCU\\{RUN_KEY}\\{VALUE} = {command}"),
                    None => outln!("not installed: nothing starts brokerd at logon"),
                }
                // As `systemctl status` does: 3 when the service is not installed.
                Ok(if installed.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                })
            }
            ServiceCommand::Logs { follow, lines } => logs(follow, lines),
        }
    }

    fn quoted(text: &str) -> String {
        format!("\"{}\"", text.replace('"', "\\\""))
    }

    /// The last `lines` of brokerd.log, then, with `follow`, what is appended to it.
    fn logs(follow: bool, lines: u32) -> Result<ExitCode> {
        let path = brokerd::paths::log_dir()
            .context("cannot find brokerd's log directory")?
            .join("brokerd.log");
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let all: Vec<String> = std::io::BufReader::new(&file)
            .lines()
            .map_while(Result::ok)
            .collect();
        let skip = all.len().saturating_sub(lines as usize);
        for line in all.iter().skip(skip) {
            outln!("{}", broker_proto::text::printable(line));
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let mut at = file.seek(std::io::SeekFrom::End(0))?;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len < at {
                // Rotated: start over at the new file.
                file = std::fs::File::open(&path)?;
                at = 0;
            }
            file.seek(std::io::SeekFrom::Start(at))?;
            let mut reader = std::io::BufReader::new(&file);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                at += line.len() as u64;
                outln!("{}", broker_proto::text::printable(line.trim_end()));
                line.clear();
            }
        }
    }
}

/// The absolute path of the brokerd to run: the one beside brokerctl, else the one on PATH.
fn installed_brokerd() -> Result<PathBuf> {
    let program = broker_proto::brokerd_program();
    if program.is_absolute() {
        return Ok(program);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(&program))
        .find(|candidate| candidate.is_file() && candidate.is_absolute())
        .context("cannot find brokerd beside brokerctl or on PATH; install it first")
}

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::*;

    /// The log a brokerd started on demand writes, where there is no service manager's journal.
    fn on_demand_log() -> Option<PathBuf> {
        brokerd::paths::log_dir().map(|dir| dir.join("brokerd.log"))
    }

    fn no_manager_words() -> String {
        format!(
            "without one, broker-shim and brokerctl start brokerd on demand when it is needed, \
             logging to {}",
            on_demand_log().map_or_else(
                || "brokerd.log in the state directory".to_string(),
                |p| p.display().to_string()
            )
        )
    }

    const UNITS: [&str; 2] = brokerd::paths::SYSTEMD_UNITS;

    /// `$XDG_CONFIG_HOME/systemd/user`, where a user's own units live.
    fn unit_dir() -> Result<PathBuf> {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".config")))
            .context("cannot find the home directory")?;
        Ok(config.join("systemd/user"))
    }

    /// Whether a systemd user manager answers: nothing else here can work without one.
    pub fn manager() -> Result<()> {
        let output = Command::new("systemctl")
            .args(["--user", "show-environment"])
            .output();
        let said = match output {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => String::from_utf8_lossy(&output.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no reason given")
                .trim()
                .to_string(),
            Err(e) => format!("cannot run systemctl: {e}"),
        };
        bail!(
            "no systemd user manager answers here (systemctl --user: {said}); nothing was \
             changed; {}",
            no_manager_words()
        )
    }

    /// The units name no socket: the socket unit's `%t/token-broker/broker.sock` is the
    /// default path wherever systemd runs a user manager.
    pub fn plan(brokerd: &Path, _socket: &Path) -> Result<Plan> {
        Ok(brokerd::service::systemd_plan(&unit_dir()?, brokerd))
    }

    pub fn uninstall() -> Result<()> {
        let dir = unit_dir()?;
        let present: Vec<PathBuf> = UNITS
            .iter()
            .map(|unit| dir.join(unit))
            .filter(|path| path.exists())
            .collect();
        if present.is_empty() {
            outln!("No token-broker units in {}: nothing to do.", dir.display());
            return Ok(());
        }
        if manager().is_err() {
            // Nothing can be running under a manager that is not there: the files are all.
            for path in present {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                outln!("Removed {}", path.display());
            }
            outln!(
                "No systemd user manager here, so nothing was enabled to disable; {}.",
                no_manager_words()
            );
            return Ok(());
        }
        run_step(
            "systemctl",
            &["--user", "disable", "--now", UNITS[0], UNITS[1]],
        )?;
        for path in present {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            outln!("Removed {}", path.display());
        }
        run_step("systemctl", &["--user", "daemon-reload"])?;
        Ok(())
    }

    pub async fn status(socket: &Path) -> Result<ExitCode> {
        if let Err(e) = manager() {
            let running = running_brokerd(socket).await;
            outln!(
                "brokerd is not a systemd service here: {e:#}.\n{}",
                match running {
                    Some(r) => format!(
                        "brokerd runs now (pid {}), started by hand or on demand.",
                        r.pid
                    ),
                    None => "brokerd is not running now.".to_string(),
                }
            );
            return Ok(ExitCode::from(3));
        }
        pass_through(
            "systemctl",
            &["--user", "status", "--no-pager", UNITS[1], UNITS[0]],
        )
    }

    pub fn logs(follow: bool, lines: u32) -> Result<ExitCode> {
        if manager().is_err() {
            // No journal for brokerd: the log a start on demand writes is the one there is.
            let log = on_demand_log().context("cannot find the home directory")?;
            if !log.exists() {
                bail!(
                    "no systemd user manager here, and no {} yet (brokerd has not been started \
                     on demand)",
                    log.display()
                );
            }
            let lines = lines.to_string();
            let log = log.display().to_string();
            let mut args = vec!["-n", &lines];
            if follow {
                args.push("-F");
            }
            args.push(&log);
            return pass_through("tail", &args);
        }
        let lines = lines.to_string();
        let mut args = vec![
            "--user",
            "--unit",
            UNITS[1],
            "--lines",
            &lines,
            "--no-pager",
        ];
        if follow {
            args.push("--follow");
        }
        pass_through("journalctl", &args)
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;

    use brokerd::service::{HOMEBREW_LABEL, LaunchAgent};

    fn agent(brokerd: &Path, socket: &Path) -> Result<LaunchAgent> {
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .context("cannot find the home directory")?;
        Ok(LaunchAgent {
            home,
            uid: broker_proto::current_uid(),
            brokerd: brokerd.to_path_buf(),
            socket: std::path::absolute(socket)
                .with_context(|| format!("cannot make {} absolute", socket.display()))?,
        })
    }

    /// The agent as installed for this user (paths other than brokerd's do not depend on it).
    fn installed() -> Result<LaunchAgent> {
        agent(Path::new("brokerd"), &broker_proto::default_socket_path())
    }

    pub fn plan(brokerd: &Path, socket: &Path) -> Result<Plan> {
        Ok(agent(brokerd, socket)?.plan())
    }

    /// launchd is always there on macOS: what is asked is that launchctl answers, and that
    /// `brew services` does not run a brokerd of its own on the same socket.
    pub fn manager() -> Result<()> {
        Command::new("launchctl")
            .arg("version")
            .output()
            .context("cannot run launchctl")?;
        let agent = installed()?;
        let homebrew = agent.homebrew_plist_path();
        if homebrew.exists() {
            bail!(
                "`brew services` already runs brokerd ({HOMEBREW_LABEL}, {}); nothing was \
                 changed; use one or the other: `brew services stop token-broker` first",
                homebrew.display()
            );
        }
        Ok(())
    }

    pub fn uninstall() -> Result<()> {
        let agent = installed()?;
        let plist = agent.plist_path();
        if !plist.exists() {
            outln!("No {}: nothing to do.", plist.display());
            return Ok(());
        }
        // Booted out first, so that launchd lets go of the socket; not loaded is no error.
        let _ = run_step("launchctl", &["bootout", &agent.service_target()]);
        std::fs::remove_file(&plist)?;
        outln!("Removed {}", plist.display());
        Ok(())
    }

    pub async fn status(_socket: &Path) -> Result<ExitCode> {
        pass_through("launchctl", &["print", &installed()?.service_target()])
    }

    pub fn logs(follow: bool, lines: u32) -> Result<ExitCode> {
        let log = installed()?.log_path().display().to_string();
        let lines = lines.to_string();
        let mut args = vec!["-n", &lines];
        if follow {
            args.push("-F");
        }
        args.push(&log);
        pass_through("tail", &args)
    }
}
