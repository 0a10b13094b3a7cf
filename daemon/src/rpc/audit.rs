//! The audit trail: one line per token handed out, naming the session, the calling process
//! and its parent (the caller is usually broker-shim, whose parent is the kubectl that wanted
//! the token); never the token. On the `audit` target, so that a log filter can turn it off on
//! its own.
//!
//! An executable's path is whatever its owner named it: a newline or an escape sequence in it
//! would forge a second line or garble a terminal, so paths are written escaped.

use std::path::PathBuf;

use broker_proto::text::escaped;

/// One line for a token handed out. `forwarded`: on the forwarding socket, where the caller
/// the kernel names is the forwarding process (ssh, a container runtime), and the program that
/// wanted the token is on the other side.
pub(super) fn token_served(session: &str, pid: Option<i32>, forwarded: bool) {
    if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
        return;
    }
    let (parent_pid, parent_exe) = describe(pid.and_then(parent_of));
    let (pid, exe) = describe(pid);
    tracing::info!(
        target: "audit",
        session = %session,
        via = %if forwarded { "forward.sock" } else { "broker.sock" },
        pid = %pid,
        exe = %exe,
        parent_pid = %parent_pid,
        parent_exe = %parent_exe,
        "audit: token served"
    );
}

/// A process's pid and executable as the audit line shows them.
fn describe(pid: Option<i32>) -> (String, String) {
    let exe = pid
        .and_then(executable_of)
        .map_or_else(|| "unknown".to_string(), |e| exe_text(&e));
    (
        pid.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        exe,
    )
}

/// A path as one line of plain text: bytes that are not UTF-8 as U+FFFD, controls escaped.
fn exe_text(path: &std::path::Path) -> String {
    escaped(&path.to_string_lossy()).into_owned()
}

/// The parent of process `pid`, if the OS says and it still runs.
#[cfg(target_os = "linux")]
fn parent_of(pid: i32) -> Option<i32> {
    // The command name (field 2) is in parentheses and may hold anything, spaces included: the
    // fields after the last ')' are plain. The parent is the second of them.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(target_os = "macos")]
fn parent_of(pid: i32) -> Option<i32> {
    // SAFETY: proc_bsdinfo is plain data, for which all zeroes is a valid value.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as i32;
    // SAFETY: the buffer is a proc_bsdinfo of `size` bytes; proc_pidinfo writes at most that.
    let written =
        unsafe { libc::proc_pidinfo(pid, libc::PROC_PIDTBSDINFO, 0, (&raw mut info).cast(), size) };
    (written == size).then_some(info.pbi_ppid as i32)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn parent_of(_pid: i32) -> Option<i32> {
    None
}

/// The executable of process `pid`, if the OS says and it still runs.
#[cfg(target_os = "linux")]
fn executable_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(target_os = "macos")]
fn executable_of(pid: i32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buffer = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer is as long as the size given; proc_pidpath writes at most that much.
    let written =
        unsafe { libc::proc_pidpath(pid, buffer.as_mut_ptr().cast(), buffer.len() as u32) };
    let written = usize::try_from(written).ok().filter(|n| *n > 0)?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(
        buffer.get(..written)?,
    )))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn executable_of(_pid: i32) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executable_path_cannot_forge_or_garble_a_line() {
        let forged = std::path::Path::new("/tmp/evil\naudit: token served session=x\u{1b}[2J");
        let text = exe_text(forged);
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        assert_eq!(text, "/tmp/evil\\naudit: token served session=x\\x1b[2J");
    }
}
