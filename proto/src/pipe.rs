//! Whom a client talks to on Windows: brokerd's named pipe and the checks around it.
//!
//! On Windows brokerd serves on a named pipe, `\\.\pipe\token-broker-<user SID>`, rather than
//! an AF_UNIX socket (why: ARCHITECTURE.md, "Windows"). The pipe namespace has no directories
//! whose owner and mode could be checked, and any process can create a pipe of any name first,
//! so the checks are of processes, not of places:
//! - brokerd creates the pipe with a DACL that grants the user's SID alone, refuses remote
//!   clients, and claims the name's first instance (a squatter's pipe makes it fail to start);
//! - a client, once connected and before it sends a byte, asks for the server's process
//!   (`GetNamedPipeServerProcessId`) and compares that process token's user SID with its own;
//! - brokerd asks the same of every client (`GetNamedPipeClientProcessId`) before serving it.

use std::fmt;
use std::io;
use std::os::windows::io::RawHandle;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
use windows_sys::Win32::System::Pipes::{GetNamedPipeClientProcessId, GetNamedPipeServerProcessId};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Where every pipe name begins.
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

/// The user's pipe: `\\.\pipe\token-broker-<SID>`, one per user and never another's.
pub fn default_pipe_name() -> io::Result<PathBuf> {
    Ok(PathBuf::from(format!(
        "{PIPE_PREFIX}token-broker-{}",
        current_user_sid()?
    )))
}

/// How long a client pauses when every instance of the pipe is busy, before trying again.
pub const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether opening a pipe failed only because every instance is busy: brokerd is between two
/// accepts, and a moment later there is a free one.
pub fn is_busy(error: &io::Error) -> bool {
    error.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_PIPE_BUSY as i32)
}

/// Whether `path` names a local pipe (`\\.\pipe\NAME`): the only place a Windows client
/// connects to.
pub fn is_pipe_name(path: &Path) -> bool {
    path.to_str()
        .and_then(|p| p.get(..PIPE_PREFIX.len()))
        .is_some_and(|head| head.eq_ignore_ascii_case(PIPE_PREFIX))
        && path.as_os_str().len() > PIPE_PREFIX.len()
}

/// The string SID (`S-1-5-21-…`) of the user this process runs as.
pub fn current_user_sid() -> io::Result<String> {
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    token_user_sid_of(unsafe { GetCurrentProcess() })
}

/// The string SID of the user process `pid` runs as.
pub fn process_user_sid(pid: u32) -> io::Result<String> {
    // SAFETY: OpenProcess has no memory preconditions; a null result is an error.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    let process = Owned(process);
    token_user_sid_of(process.0)
}

/// The process at the server end of a connected pipe.
pub fn server_process_id(pipe: RawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a live pipe handle borrowed for the call; `pid` is valid for writes.
    if unsafe { GetNamedPipeServerProcessId(pipe as HANDLE, &raw mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The process at the client end of a connected pipe.
pub fn client_process_id(pipe: RawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: as for server_process_id.
    if unsafe { GetNamedPipeClientProcessId(pipe as HANDLE, &raw mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The process serving a pipe is not the user's own.
#[derive(Debug)]
pub struct ForeignPeer {
    pub path: PathBuf,
    pub peer: String,
    pub user: String,
}

impl fmt::Display for ForeignPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the process serving {} runs as {}, not as {}: it is not your brokerd; nothing was \
             sent to it",
            self.path.display(),
            self.peer,
            self.user
        )
    }
}

impl std::error::Error for ForeignPeer {}

/// Checks that the server end of a freshly connected pipe runs as `user` (a string SID).
pub fn check_server(pipe: RawHandle, path: &Path, user: &str) -> io::Result<()> {
    let peer = process_user_sid(server_process_id(pipe)?)?;
    if peer != user {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            ForeignPeer {
                path: path.to_path_buf(),
                peer,
                user: user.to_string(),
            },
        ));
    }
    Ok(())
}

/// Makes this process's standard handles non-inheritable, before it starts brokerd.
///
/// Windows hands a child every inheritable handle of its parent, not only the three it is
/// given. The shim's standard handles are kubectl's pipes: a brokerd that inherited them
/// would hold kubectl's stdout open for its whole life, and kubectl (which reads until the end
/// of the pipe) would hang after the shim exits. brokerd gets pipes of its own instead.
pub fn keep_std_handles_from_children() {
    use windows_sys::Win32::Foundation::{HANDLE_FLAG_INHERIT, SetHandleInformation};
    use windows_sys::Win32::System::Console::{
        GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
    };
    for which in [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
        // SAFETY: GetStdHandle has no preconditions; a null or invalid handle is skipped, and
        // clearing the inherit flag of a live handle changes nothing else about it.
        unsafe {
            let handle = GetStdHandle(which);
            if !handle.is_null() && handle != windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE {
                SetHandleInformation(handle, HANDLE_FLAG_INHERIT, 0);
            }
        }
    }
}

/// A handle closed when dropped.
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by this module and is closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

/// The user SID in `process`'s primary token.
fn token_user_sid_of(process: HANDLE) -> io::Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a live process handle; `token` is valid for writes.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &raw mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Owned(token);
    // TOKEN_USER is a pointer and the SID it points to, within the same buffer; 256 bytes
    // hold any SID (at most 68 bytes) with room to spare. u64s keep the buffer aligned.
    let mut buffer = [0u64; 32];
    let mut needed = 0u32;
    // SAFETY: the buffer is valid for writes of the size passed; `needed` is valid for writes.
    let done = unsafe {
        GetTokenInformation(
            token.0,
            TokenUser,
            buffer.as_mut_ptr().cast(),
            std::mem::size_of_val(&buffer) as u32,
            &raw mut needed,
        )
    };
    if done == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: GetTokenInformation succeeded, so the buffer starts with a TOKEN_USER whose SID
    // pointer points into the same buffer, which lives until the end of this function.
    let sid = unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID (above); `text` is valid for writes and receives a
    // LocalAlloc'd, NUL-terminated string that is freed below.
    if unsafe { ConvertSidToStringSidW(sid, &raw mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is NUL-terminated (above); the length is counted before it is read.
    let sid = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
    };
    // SAFETY: `text` was allocated by ConvertSidToStringSidW with LocalAlloc; freed once.
    unsafe { LocalFree(text as HLOCAL) };
    Ok(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_pipe_names_are_pipe_names() {
        assert!(is_pipe_name(Path::new(r"\\.\pipe\token-broker-S-1-5-21-1")));
        assert!(is_pipe_name(Path::new(r"\\.\PIPE\x")));
        assert!(!is_pipe_name(Path::new(r"\\.\pipe\")));
        assert!(!is_pipe_name(Path::new(r"\\server\pipe\x")));
        assert!(!is_pipe_name(Path::new(r"C:\token-broker\broker.sock")));
    }

    #[test]
    fn this_process_has_a_user_sid_and_it_is_its_own() {
        let sid = current_user_sid().unwrap();
        assert!(sid.starts_with("S-1-"), "{sid}");
        assert_eq!(process_user_sid(std::process::id()).unwrap(), sid);
    }
}
