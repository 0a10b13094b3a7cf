//! What ships: the Debian package's contents, and the launchd agent as macOS reads it.

use std::path::Path;
use std::process::Command;

use broker_tests::harness::{binaries, cargo, on_path, profile, require, success};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn cargo_deb_available() -> bool {
    cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_deb_holds_the_binaries_the_user_units_and_the_docs() {
    if !require(
        "cargo-deb (cargo install cargo-deb) and dpkg-deb",
        cargo_deb_available() && on_path("dpkg-deb"),
    ) {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let target_dir = binaries().brokerd.parent().unwrap().parent().unwrap();
    // The binaries the tests run are the ones packaged; nothing is built twice.
    let built = cargo()
        .args([
            "deb",
            "-p",
            "brokerd",
            "--no-build",
            "--fast",
            "--profile",
            profile(),
        ])
        .arg("--output")
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace())
        .output()
        .unwrap();
    let deb = success(&built, "cargo deb");
    let deb = deb.lines().last().unwrap().trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");

    let listing = success(
        &Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb --contents",
    );
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut expected = vec![
        "./usr/bin/broker-shim",
        "./usr/bin/brokerctl",
        "./usr/bin/brokerd",
        "./usr/lib/systemd/user/token-broker.service",
        "./usr/lib/systemd/user/token-broker.socket",
        "./usr/share/doc/token-broker/README.md",
        "./usr/share/doc/token-broker/cli.md",
        "./usr/share/doc/token-broker/configuration.md",
        "./usr/share/doc/token-broker/copyright",
    ];
    let mut files = files.clone();
    files.sort_unstable();
    expected.sort_unstable();
    assert_eq!(files, expected, "{listing}");
    for binary in ["broker-shim", "brokerctl", "brokerd"] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("./usr/bin/{binary}")))
            .unwrap();
        assert!(line.starts_with("-rwxr-xr-x"), "{line}");
    }

    let control = success(
        &Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb --info",
    );
    for field in [
        "Package: token-broker",
        "Depends: libc6",
        "Recommends: gnome-keyring | keepassxc | kwalletmanager",
    ] {
        assert!(control.contains(field), "{control}");
    }

    // The packaged units are the files in packaging/, brokerd where the package puts it.
    let unit = success(
        &Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dpkg-deb --fsys-tarfile {deb} | tar -xO ./usr/lib/systemd/user/token-broker.service"
            ))
            .output()
            .unwrap(),
        "extract the unit",
    );
    assert_eq!(
        unit,
        std::fs::read_to_string(workspace().join("packaging/systemd/token-broker.service"))
            .unwrap()
    );
    assert!(unit.contains("ExecStart=/usr/bin/brokerd\n"));
}

#[test]
fn the_launch_agent_is_a_property_list_launchd_can_read() {
    if !require("python3", on_path("python3")) {
        return;
    }
    let plist = workspace().join("packaging/launchd/dev.token-broker.brokerd.plist");
    let checked = Command::new("python3")
        .arg("-c")
        .arg(
            "import plistlib, sys\n\
             d = plistlib.load(open(sys.argv[1], 'rb'))\n\
             assert d['Label'] == 'dev.token-broker.brokerd', d\n\
             assert d['RunAtLoad'] is True, d\n\
             assert d['KeepAlive'] == {'SuccessfulExit': False}, d\n\
             assert d['ProgramArguments'][0].endswith('/brokerd'), d\n\
             assert '/Library/Logs/token-broker/' in d['StandardErrorPath'], d\n\
             l = d['Sockets']['Listeners']\n\
             assert l['SockPathMode'] == 0o600 and l['SockType'] == 'stream', l\n\
             assert d['ProgramArguments'][1:] == ['--socket', l['SockPathName']], d\n\
             print('ok')",
        )
        .arg(&plist)
        .output()
        .unwrap();
    assert_eq!(success(&checked, "plistlib").trim(), "ok");
}
