//! Shell completions and man pages, generated from the clap definitions.

use broker_tests::harness::{Sandbox, on_path, require, success};

#[test]
fn completions_for_every_shell_know_the_commands() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = success(&sandbox.ctl(&["completions", shell]), shell);
        for command in ["status", "login", "doctor", "kubeconfig", "convert"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
    }
    let bad = sandbox.ctl(&["completions", "tcsh"]);
    assert!(!bad.status.success());
}

#[test]
fn bash_completes_a_command_and_its_flags() {
    if !require("bash", on_path("bash")) {
        return;
    }
    let sandbox = Sandbox::new();
    let script = sandbox.root().join("brokerctl.bash");
    std::fs::write(
        &script,
        success(&sandbox.ctl(&["completions", "bash"]), "bash completion"),
    )
    .unwrap();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _brokerctl brokerctl '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        success(
            &sandbox
                .command(std::path::Path::new("bash"))
                .args(["-c", &program])
                .output()
                .unwrap(),
            "bash",
        )
    };
    assert_eq!(complete("brokerctl do").trim(), "doctor");
    let flags = complete("brokerctl status --");
    assert!(flags.lines().any(|l| l == "--watch"), "{flags}");
}

#[test]
fn man_pages_for_brokerctl_each_command_and_brokerd() {
    let sandbox = Sandbox::new();
    let dir = sandbox.root().join("man1");
    let listed = success(
        &sandbox.ctl(&["man", "--out-dir", dir.to_str().unwrap()]),
        "man",
    );
    for page in [
        "brokerctl.1",
        "brokerd.1",
        "brokerctl-status.1",
        "brokerctl-doctor.1",
        "brokerctl-kubeconfig-convert.1",
    ] {
        let path = dir.join(page);
        assert!(listed.contains(&path.display().to_string()), "{listed}");
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(roff.contains(".TH "), "{page} is roff");
    }
    let brokerd = std::fs::read_to_string(dir.join("brokerd.1")).unwrap();
    assert!(brokerd.contains("\\-\\-store"), "brokerd's own flags");
    assert!(
        !brokerd.contains("test\\-clock"),
        "hidden flags stay hidden"
    );
    let convert = std::fs::read_to_string(dir.join("brokerctl-kubeconfig-convert.1")).unwrap();
    assert!(
        convert.contains("brokerctl kubeconfig convert"),
        "{convert}"
    );
    assert!(convert.contains("\\-\\-dry\\-run"));

    // Without a directory, brokerctl(1) goes to stdout, ready for `man -l -`.
    let page = success(&sandbox.ctl(&["man"]), "man to stdout");
    assert!(
        page.starts_with(".ie") || page.contains(".TH brokerctl 1"),
        "{page}"
    );
    if on_path("man") {
        let rendered = sandbox
            .command(std::path::Path::new("man"))
            .arg("-l")
            .arg(dir.join("brokerctl-doctor.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("--authority-host"), "{text}");
    }
}
