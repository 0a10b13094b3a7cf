//! Shell completions and man pages, generated from the same clap definitions the binaries
//! parse, so they cannot drift from the flags.

use std::path::Path;
use std::process::ExitCode;

use crate::output::outln;
use anyhow::{Context, Result};
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "brokerctl", &mut script);
    crate::output::write_stdout_bytes(&script);
}

/// brokerctl(1) to stdout; or, with a directory, brokerctl(1), brokerctl-<command>(1) for each
/// command, and brokerd(1).
pub fn man(brokerctl: clap::Command, out_dir: Option<&Path>) -> Result<ExitCode> {
    let Some(dir) = out_dir else {
        let mut roff = Vec::new();
        clap_mangen::Man::new(brokerctl).render(&mut roff)?;
        crate::output::write_stdout_bytes(&roff);
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut pages = vec![brokerctl.clone(), brokerd::cli::DaemonArgs::command()];
    pages.extend(pages_of(&brokerctl, "brokerctl"));
    for page in pages {
        let page = page.version(env!("CARGO_PKG_VERSION"));
        let path = dir.join(format!("{}.1", page.get_name()));
        let mut roff = Vec::new();
        clap_mangen::Man::new(page).render(&mut roff)?;
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    for path in &written {
        outln!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per subcommand, named `parent-child` as git's pages are.
fn pages_of(command: &clap::Command, prefix: &str) -> Vec<clap::Command> {
    let mut pages = Vec::new();
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{prefix}-{}", sub.get_name());
        pages.extend(pages_of(sub, &name));
        // The synopsis shows the command as it is typed.
        let typed = name.replace('-', " ");
        pages.push(sub.clone().name(name).bin_name(typed));
    }
    pages
}
