//! The project's binaries, built by the tests themselves (never stale), with the cargo and
//! profile that run them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the project's binaries, built once per test process.
pub struct Binaries {
    pub brokerd: PathBuf,
    pub brokerctl: PathBuf,
    pub shim: PathBuf,
    pub mock_entra: PathBuf,
    pub fake_apiserver: PathBuf,
}

/// Builds the workspace's binaries (a no-op when they are fresh) with the same cargo and
/// profile as this test, so that a test never runs a stale brokerd.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test knows its own path");
        // Tests run from target/<profile>/deps/<test>, broker-bench from target/<profile>/.
        let mut profile_dir = exe.parent().expect("an executable has a directory");
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir = profile_dir
                .parent()
                .expect("deps/ is inside the profile dir");
        }
        let profile_dir = profile_dir.to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // A release build is built as it ships (broker-bench measures it); the tests' own
        // profile otherwise.
        let mut build = if profile_dir.file_name().is_some_and(|n| n == "release") {
            let mut script = Command::new(root.join("packaging/build-release"));
            for (name, value) in cargo().get_envs() {
                if value.is_none() {
                    script.env_remove(name);
                }
            }
            if let Some(cargo) = std::env::var_os("CARGO") {
                // The script's `cargo` is the one running this build.
                let dir = Path::new(&cargo).parent().map(Path::to_path_buf);
                if let (Some(dir), Some(path)) = (dir, std::env::var_os("PATH")) {
                    let mut dirs = vec![dir];
                    dirs.extend(std::env::split_paths(&path));
                    script.env("PATH", std::env::join_paths(dirs).expect("PATH"));
                }
            }
            script
        } else {
            let mut build = cargo();
            build.args(["build", "--workspace", "--bins"]);
            build
        };
        build
            .args(["--quiet", "--target-dir"])
            .arg(&target_dir)
            .current_dir(&root);
        let status = build.status().expect("the build runs");
        assert!(status.success(), "building the binaries failed");
        let bin = |name: &str| {
            let path = profile_dir.join(name);
            assert!(path.exists(), "{} was not built", path.display());
            path
        };
        Binaries {
            brokerd: bin("brokerd"),
            brokerctl: bin("brokerctl"),
            shim: bin("broker-shim"),
            mock_entra: bin("mock-entra"),
            fake_apiserver: bin("fake-apiserver"),
        }
    })
}

/// The cargo running these tests, without the variables cargo set for this test crate:
/// passed on, they would look like a change to build scripts that watch them (ring's does)
/// and rebuild half the tree every time.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_this_crate = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if set_for_this_crate {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The profile the tests (and so [`binaries`]) are built with: `dev` or `release`.
pub fn profile() -> &'static str {
    if binaries()
        .brokerd
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "release")
    {
        "release"
    } else {
        "dev"
    }
}
