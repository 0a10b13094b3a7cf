//! `brokerctl service`: the units it writes are ones systemd accepts, and it drives
//! `systemctl --user` / `journalctl --user` as a person would. systemctl and journalctl are
//! stand-ins that record their arguments: CI machines have no systemd user manager.

use std::path::{Path, PathBuf};

use broker_tests::harness::{Sandbox, binaries, failure, on_path, require, success};

/// Puts recording stand-ins for systemctl and journalctl on the sandbox's PATH; `systemctl`
/// fails with `systemctl_error` when given. Returns the file they record to.
fn fake_systemd(sandbox: &mut Sandbox, systemctl_error: Option<&str>) -> PathBuf {
    let record = sandbox.root().join("systemd-calls");
    let fail = match systemctl_error {
        Some(message) => format!("echo '{message}' >&2; exit 1"),
        None => "exit 0".into(),
    };
    let bin = sandbox
        .script(
            "systemctl",
            &format!("echo \"systemctl $*\" >> {}\n{fail}", record.display()),
        )
        .parent()
        .unwrap()
        .to_path_buf();
    sandbox.script(
        "journalctl",
        &format!("echo \"journalctl $*\" >> {}", record.display()),
    );
    sandbox.prepend_path(&bin);
    record
}

fn calls(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn unit_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox.home.join(".config/systemd/user")
}

#[test]
fn install_writes_units_systemd_accepts_enables_them_and_takes_over_from_brokerd() {
    let mut sandbox = Sandbox::new();
    let record = fake_systemd(&mut sandbox, None);
    // A brokerd started on demand, before the service existed.
    success(&sandbox.ctl(&["status"]), "status");
    let earlier = sandbox.serving_pid().expect("brokerd started on demand");

    let said = success(&sandbox.ctl(&["service", "install"]), "service install");
    let dir = unit_dir(&sandbox);
    for unit in ["token-broker.socket", "token-broker.service"] {
        assert!(
            said.contains(&format!("Wrote {}", dir.join(unit).display())),
            "{said}"
        );
    }
    assert!(
        said.contains(&format!(
            "Stopped the brokerd that ran outside the service (pid {earlier})"
        )),
        "{said}"
    );
    assert!(sandbox.serving_pid().is_none());
    assert!(said.contains(
        "Running: systemctl --user enable --now token-broker.socket token-broker.service"
    ));
    assert_eq!(
        calls(&record),
        [
            "systemctl --user show-environment",
            "systemctl --user daemon-reload",
            "systemctl --user enable --now token-broker.socket token-broker.service",
        ]
    );
    let service = std::fs::read_to_string(dir.join("token-broker.service")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={}\n", binaries().brokerd.display())),
        "{service}"
    );

    if !require(
        "systemd-analyze (package systemd)",
        on_path("systemd-analyze"),
    ) {
        return;
    }
    let verify = sandbox
        .command(Path::new("systemd-analyze"))
        .args(["verify", "--user"])
        .arg(dir.join("token-broker.socket"))
        .arg(dir.join("token-broker.service"))
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {complaints}"
    );
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}

/// Without a systemd user manager (a container, WSL without systemd) install changes
/// nothing: the brokerd running on demand keeps running with its sessions, no unit is written,
/// and the one line says what happens instead. The other service commands say so plainly.
#[test]
fn without_a_user_manager_nothing_is_changed_and_each_command_says_so() {
    let mut sandbox = Sandbox::new();
    fake_systemd(
        &mut sandbox,
        Some("Failed to connect to bus: No medium found"),
    );
    success(&sandbox.ctl(&["status"]), "status");
    let running = sandbox.serving_pid().expect("brokerd started on demand");
    let err = failure(&sandbox.ctl(&["service", "install"]), "service install");
    assert!(
        err.contains("no systemd user manager answers here"),
        "{err}"
    );
    assert!(
        err.contains("Failed to connect to bus: No medium found"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("brokerd.log"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!unit_dir(&sandbox).join("token-broker.service").exists());
    assert_eq!(sandbox.serving_pid(), Some(running), "brokerd still runs");

    let said = success(&sandbox.ctl(&["service", "uninstall"]), "uninstall");
    assert!(said.contains("nothing to do"), "{said}");
    let status = sandbox.ctl(&["service", "status"]);
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains("brokerd is not a systemd service here"),
        "{said}"
    );
    assert!(
        said.contains(&format!("brokerd runs now (pid {running})")),
        "{said}"
    );
    assert_eq!(status.status.code(), Some(3));
    // The log there is: the one a start on demand writes.
    let logs = success(&sandbox.ctl(&["service", "logs", "-n", "5"]), "logs");
    assert!(logs.contains("started on demand"), "{logs}");
}

/// The same with the real systemctl, where one is installed and no user manager runs (as on
/// CI machines and in containers).
#[test]
fn the_real_systemctl_without_a_user_manager_changes_nothing() {
    if !require("systemctl (package systemd)", on_path("systemctl")) {
        return;
    }
    let sandbox = Sandbox::new();
    let manager = sandbox
        .command(Path::new("systemctl"))
        .args(["--user", "show-environment"])
        .output()
        .unwrap();
    if manager.status.success() {
        broker_tests::harness::skipped("a systemd user manager answers here: nothing to show");
        return;
    }
    success(&sandbox.ctl(&["status"]), "status");
    let running = sandbox.serving_pid().expect("brokerd started on demand");
    let err = failure(&sandbox.ctl(&["service", "install"]), "service install");
    assert!(
        err.contains("no systemd user manager answers here"),
        "{err}"
    );
    assert!(!unit_dir(&sandbox).join("token-broker.service").exists());
    assert_eq!(sandbox.serving_pid(), Some(running));
}

/// A brokerd on `--store memory` holding sessions is not stopped for the service unless told:
/// its sessions would be gone.
#[test]
fn install_does_not_stop_a_brokerd_that_would_forget_its_sessions_unless_forced() {
    let mock = broker_tests::harness::fast_mock();
    let mut sandbox = Sandbox::new();
    let record = fake_systemd(&mut sandbox, None);
    let mut daemon = sandbox.start_daemon(&["--store", "memory"]);
    broker_tests::harness::device_login(&sandbox, &mock);
    let err = failure(&sandbox.ctl(&["service", "install"]), "service install");
    assert!(err.contains("keeps 1 session(s) in memory only"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(!unit_dir(&sandbox).join("token-broker.service").exists());
    assert_eq!(sandbox.serving_pid(), Some(daemon.pid()));
    assert_eq!(calls(&record), ["systemctl --user show-environment"]);

    let said = success(
        &sandbox.ctl(&["service", "install", "--force"]),
        "service install --force",
    );
    assert!(said.contains("Stopped the brokerd"), "{said}");
    daemon.stop();
}

#[test]
fn uninstall_disables_and_removes_the_units() {
    let mut sandbox = Sandbox::new();
    let record = fake_systemd(&mut sandbox, None);
    let said = success(&sandbox.ctl(&["service", "uninstall"]), "uninstall");
    assert!(said.contains("nothing to do"), "{said}");
    assert!(calls(&record).is_empty());

    success(&sandbox.ctl(&["service", "install"]), "install");
    std::fs::remove_file(&record).unwrap();
    let said = success(&sandbox.ctl(&["service", "uninstall"]), "uninstall");
    assert!(said.contains("Removed"), "{said}");
    assert_eq!(
        calls(&record),
        [
            "systemctl --user show-environment",
            "systemctl --user disable --now token-broker.socket token-broker.service",
            "systemctl --user daemon-reload",
        ]
    );
    assert!(!unit_dir(&sandbox).join("token-broker.service").exists());
    assert!(!unit_dir(&sandbox).join("token-broker.socket").exists());
}

#[test]
fn status_and_logs_ask_the_service_manager() {
    let mut sandbox = Sandbox::new();
    let record = fake_systemd(&mut sandbox, None);
    success(&sandbox.ctl(&["service", "status"]), "status");
    success(&sandbox.ctl(&["service", "logs", "-f", "-n", "20"]), "logs");
    assert_eq!(
        calls(&record),
        [
            "systemctl --user show-environment",
            "systemctl --user status --no-pager token-broker.service token-broker.socket",
            "systemctl --user show-environment",
            "journalctl --user --unit token-broker.service --lines 20 --no-pager --follow",
        ]
    );
}

#[test]
fn a_dry_run_shows_the_files_and_commands_and_changes_nothing() {
    let mut sandbox = Sandbox::new();
    let record = fake_systemd(&mut sandbox, None);
    success(&sandbox.ctl(&["status"]), "status");
    let running = sandbox.serving_pid().expect("brokerd started on demand");

    let said = success(
        &sandbox.ctl(&["service", "install", "--dry-run"]),
        "service install --dry-run",
    );
    let dir = unit_dir(&sandbox);
    assert!(
        said.contains(&format!(
            "Would write {}:",
            dir.join("token-broker.service").display()
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("    ExecStart={}", binaries().brokerd.display())),
        "{said}"
    );
    assert!(
        said.contains(
            "Would run: systemctl --user enable --now token-broker.socket token-broker.service"
        ),
        "{said}"
    );
    assert!(!dir.exists(), "nothing written");
    assert!(calls(&record).is_empty(), "{:?}", calls(&record));
    assert_eq!(sandbox.serving_pid(), Some(running), "brokerd left running");
}

/// A command of the install that fails stops it with the command's words, and says which
/// files it had written (they are kept: the user can look at them, or run the rest).
#[test]
fn a_failing_step_stops_the_install_and_names_what_it_wrote() {
    let mut sandbox = Sandbox::new();
    let record = sandbox.root().join("systemd-calls");
    let bin = sandbox
        .script(
            "systemctl",
            &format!(
                "echo \"systemctl $*\" >> {}\ncase \"$*\" in *enable*) echo 'Unit file is \
                 masked.' >&2; exit 1;; esac",
                record.display()
            ),
        )
        .parent()
        .unwrap()
        .to_path_buf();
    sandbox.prepend_path(&bin);
    let err = failure(&sandbox.ctl(&["service", "install"]), "service install");
    let dir = unit_dir(&sandbox);
    assert!(
        err.contains(
            "`systemctl --user enable --now token-broker.socket token-broker.service` failed"
        ),
        "{err}"
    );
    assert!(err.contains("Unit file is masked."), "{err}");
    assert!(
        err.contains(&format!(
            "written and kept: {}",
            dir.join("token-broker.socket").display()
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
