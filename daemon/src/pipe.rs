//! brokerd's named pipe on Windows: claiming it, accepting on it, and vetting every client.
//!
//! What the Unix socket's directory, mode and `SO_PEERCRED` do there, this does here
//! (the client's half is `broker_proto::pipe`):
//! - one brokerd per user and pipe: a named mutex, `Local\token-broker-<pipe>`, held for the
//!   daemon's life and released by Windows when it dies, however it dies;
//! - the pipe's DACL grants the user's SID alone (`D:P(A;;GA;;;<SID>)`: protected, nothing
//!   inherited), remote clients are refused (`PIPE_REJECT_REMOTE_CLIENTS`), and the first
//!   instance is claimed (`FILE_FLAG_FIRST_PIPE_INSTANCE`), so a pipe of that name someone
//!   else made first stops brokerd instead of sharing the name with it;
//! - each accepted client's process (`GetNamedPipeClientProcessId`) must run as the user's SID,
//!   or it is disconnected before brokerd reads a byte.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::windows::named_pipe::{NamedPipeServer, PipeMode, ServerOptions};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ALREADY_EXISTS, GetLastError, HANDLE, HLOCAL, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::System::Threading::CreateMutexW;

use crate::incoming::Accept;

/// Accepted connections waiting for tonic: a few, so that a burst of kubectl runs is not
/// throttled by the hand-over.
const BACKLOG: usize = 64;
/// How long accepting pauses after it fails, instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// This process is the one brokerd of its pipe, for as long as this lives.
pub struct Instance(HANDLE);

// SAFETY: a mutex handle is a kernel object reference, usable from any thread; it is only
// closed, once, on drop.
unsafe impl Send for Instance {}
// SAFETY: as for Send: nothing is done through a shared reference.
unsafe impl Sync for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateMutexW and is closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

/// The named mutex of `pipe`: `Local\` (this logon session) and the pipe's name, whose
/// backslashes a kernel object name may not hold.
fn mutex_name(pipe: &Path) -> String {
    let name = pipe.to_string_lossy();
    let tail = name
        .get(broker_proto::pipe::PIPE_PREFIX.len()..)
        .unwrap_or(&name);
    format!(r"Local\{}", tail.replace('\\', "/"))
}

/// Claims `pipe` for this process: `None` when another brokerd holds it (running, or starting).
pub fn claim(pipe: &Path) -> io::Result<Option<Instance>> {
    let name = wide(&mutex_name(pipe));
    // SAFETY: `name` is NUL-terminated and lives across the call; default security.
    let handle = unsafe { CreateMutexW(std::ptr::null(), 1, name.as_ptr()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read at once after the call that set it.
    if unsafe { GetLastError() } == ERROR_ALREADY_EXISTS {
        // SAFETY: the handle is ours to close; the mutex lives on in its holder.
        unsafe { CloseHandle(handle) };
        return Ok(None);
    }
    Ok(Some(Instance(handle)))
}

/// Waits up to `patience` for the brokerd holding `pipe` to serve on it.
pub fn wait_until_served(pipe: &Path, patience: Duration) -> io::Result<()> {
    let end = Instant::now() + patience;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pipe)
        {
            Ok(_) => return Ok(()),
            Err(e) if broker_proto::pipe::is_busy(&e) => return Ok(()),
            Err(e) if Instant::now() >= end => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "another brokerd holds {} but has not served within {} s: {e}",
                        pipe.display(),
                        patience.as_secs()
                    ),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A security descriptor built from SDDL, freed on drop.
struct Descriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is written once, by the conversion, and only read afterwards.
unsafe impl Send for Descriptor {}
// SAFETY: as for Send: shared references only read it.
unsafe impl Sync for Descriptor {}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW with
        // LocalAlloc; freed once, here.
        unsafe { LocalFree(self.0 as HLOCAL) };
    }
}

impl Descriptor {
    /// Full access for `sid` alone; nothing inherited from the parent object.
    fn for_user(sid: &str) -> io::Result<Self> {
        let sddl = wide(&format!("D:P(A;;GA;;;{sid})"));
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated; `descriptor` is valid for writes.
        let done = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &raw mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if done == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Descriptor(descriptor))
    }
}

/// The pipe, its first instance created: clients can connect from now on.
pub struct PipeListener {
    pub path: PathBuf,
    user: String,
    descriptor: Descriptor,
    first: NamedPipeServer,
}

impl PipeListener {
    /// Creates `path`'s first instance, for the user this process runs as.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        if !broker_proto::pipe::is_pipe_name(path) {
            anyhow::bail!(
                "{} is not a pipe name: on Windows brokerd serves on \\\\.\\pipe\\NAME",
                path.display()
            );
        }
        let user = broker_proto::pipe::current_user_sid()
            .map_err(|e| anyhow::anyhow!("cannot read this process's user: {e}"))?;
        let descriptor = Descriptor::for_user(&user)
            .map_err(|e| anyhow::anyhow!("cannot make the pipe's access list: {e}"))?;
        let first = create(path, &descriptor, true).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} (is another program using that name?)",
                path.display()
            )
        })?;
        Ok(PipeListener {
            path: path.to_path_buf(),
            user,
            descriptor,
            first,
        })
    }

    /// Accepts on the pipe, one instance after another, until the returned [`Accepted`] is
    /// dropped. Clients that are not the user's are disconnected unread, and logged.
    pub fn accept(self) -> Accepted {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(accept_loop(self, tx));
        Accepted(rx)
    }
}

fn create(path: &Path, descriptor: &Descriptor, first: bool) -> io::Result<NamedPipeServer> {
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor.0,
        bInheritHandle: 0,
    };
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true)
        .pipe_mode(PipeMode::Byte);
    // SAFETY: `attributes` is a SECURITY_ATTRIBUTES whose descriptor lives in `descriptor`,
    // both valid for the duration of the call, which copies what it needs.
    unsafe {
        options.create_with_security_attributes_raw(path, (&raw mut attributes).cast::<c_void>())
    }
}

async fn accept_loop(listener: PipeListener, tx: mpsc::Sender<io::Result<PipeConnection>>) {
    let PipeListener {
        path,
        user,
        descriptor,
        first,
    } = listener;
    let mut server = first;
    loop {
        let accepted = tokio::select! {
            connected = server.connect() => connected,
            () = tx.closed() => return,
        };
        // The next instance before this one is handed over, so that there is always one to
        // connect to.
        let next = loop {
            match create(&path, &descriptor, false) {
                Ok(next) => break next,
                Err(e) => {
                    tracing::warn!("cannot create another instance of {}: {e}", path.display());
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        };
        let connected = std::mem::replace(&mut server, next);
        if let Err(e) = accepted {
            // A client gone before it was accepted (ERROR_NO_DATA), or worse: this instance is
            // dropped, the next one waits, and a pause keeps a persistent failure from spinning.
            tracing::debug!("no connection on {}: {e}", path.display());
            tokio::time::sleep(ACCEPT_PAUSE).await;
            continue;
        }
        match vet(&connected, &user) {
            Ok(pid) => {
                let connection = PipeConnection {
                    pipe: connected,
                    pid,
                };
                if tx.send(Ok(connection)).await.is_err() {
                    return;
                }
            }
            Err(why) => tracing::warn!("refused a client of {}: {why}", path.display()),
        }
    }
}

/// The client's process id, if it runs as `user`.
fn vet(pipe: &NamedPipeServer, user: &str) -> Result<u32, String> {
    let pid = broker_proto::pipe::client_process_id(pipe.as_raw_handle())
        .map_err(|e| format!("cannot identify it: {e}"))?;
    let sid = broker_proto::pipe::process_user_sid(pid)
        .map_err(|e| format!("cannot read the user of process {pid}: {e}"))?;
    if sid != user {
        return Err(format!(
            "process {pid} runs as {sid}; only {user} may use this brokerd"
        ));
    }
    Ok(pid)
}

/// Connections the accept loop vetted, as [`crate::incoming::Incoming`] takes them.
pub struct Accepted(mpsc::Receiver<io::Result<PipeConnection>>);

impl Accept for Accepted {
    type Conn = PipeConnection;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<PipeConnection>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(accepted)) => Poll::Ready(accepted),
            // The loop only ends when this side is dropped; until then, nothing more.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// One client's pipe instance.
pub struct PipeConnection {
    pipe: NamedPipeServer,
    pid: u32,
}

/// What a call knows of its caller on Windows: the process, already checked to be the user's.
#[derive(Clone, Copy, Debug)]
pub struct PipeConnectInfo {
    pub pid: u32,
}

impl Connected for PipeConnection {
    type ConnectInfo = PipeConnectInfo;

    fn connect_info(&self) -> PipeConnectInfo {
        PipeConnectInfo { pid: self.pid }
    }
}

impl AsyncRead for PipeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().pipe).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_shutdown(cx)
    }
}

/// `text` as the NUL-terminated UTF-16 string Windows' `W` functions take.
pub(crate) fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutex_is_named_after_the_pipe_without_backslashes() {
        assert_eq!(
            mutex_name(Path::new(r"\\.\pipe\token-broker-S-1-5-21-1")),
            r"Local\token-broker-S-1-5-21-1"
        );
        assert_eq!(mutex_name(Path::new(r"\\.\pipe\a\b")), r"Local\a/b");
    }
}
