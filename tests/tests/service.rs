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

#[test]
fn install_without_a_user_manager_says_what_happens_instead() {
    let mut sandbox = Sandbox::new();
    fake_systemd(
        &mut sandbox,
        Some("Failed to connect to bus: No medium found"),
    );
    let err = failure(&sandbox.ctl(&["service", "install"]), "service install");
    assert!(
        err.contains("Failed to connect to bus: No medium found"),
        "{err}"
    );
    assert!(
        err.contains("broker-shim starts brokerd on demand"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(unit_dir(&sandbox).join("token-broker.service").exists());
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
            "systemctl --user status --no-pager token-broker.service token-broker.socket",
            "journalctl --user --unit token-broker.service --lines 20 --no-pager --follow",
        ]
    );
}
