//! The Unix socket brokerd listens on, and the checks that make it private.
//!
//! The socket lives in a directory that must be a real directory (not a symlink), owned by the
//! daemon's user and closed to everyone else (no group or other permissions), below directories
//! no other user can change; brokerd creates it 0700 when missing and refuses to use it
//! otherwise. These are the rules its clients check before they connect
//! ([`broker_proto::socket`]), so a path brokerd serves is one they accept. The socket itself
//! is 0600. A lock file next to it makes sure one daemon serves a path; a socket left by a dead
//! daemon is replaced.
//!
//! The socket is either bound here or inherited from a service manager (systemd's socket
//! activation, `LISTEN_FDS`); an inherited one passes the same checks, and its file belongs to
//! the service manager, so brokerd never removes it. A second lock file serialises starts on
//! demand: whoever holds it either finds a daemon answering or becomes it.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use broker_proto::socket::DirProblem;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("the socket path {0} has no parent directory")]
    NoParent(PathBuf),
    #[error("cannot create the socket directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Dir(#[from] DirProblem),
    #[error("another brokerd already serves {path}")]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the socket the service manager passed (LISTEN_FDS) cannot be used: {0}")]
    Inherited(String),
    #[error("another brokerd has been starting on {path} for {seconds} s; see its log")]
    StartTimeout { path: PathBuf, seconds: u64 },
}

/// A bound, private listener. Dropping it releases the lock but leaves the socket file; call
/// [`Listener::remove`] on orderly shutdown.
pub struct Listener {
    pub socket: std::os::unix::net::UnixListener,
    pub path: PathBuf,
    /// Passed by a service manager, which owns the socket file.
    pub inherited: bool,
    _lock: File,
}

impl Listener {
    /// Removes the socket file on orderly shutdown, so that clients see "not running" rather
    /// than a dead socket; an inherited socket is left to the service manager, which answers
    /// on it next time by starting brokerd again.
    pub fn remove(&self) {
        if self.inherited {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// The listening socket a service manager passed, if any: launchd's (the LaunchAgent's
/// `Sockets` entry, macOS) or systemd's (`LISTEN_PID`/`LISTEN_FDS`). Call it first thing in
/// `main`, while the process has one thread: it unsets systemd's variables, so that processes
/// brokerd starts do not take the socket for theirs.
pub fn take_inherited() -> Result<Option<std::os::unix::net::UnixListener>, ListenError> {
    if let Some(fd) = launchd::activate()? {
        return listening_socket(fd, "the LaunchAgent's Sockets entry needs SockType stream")
            .map(Some);
    }
    let inherited = |e: std::io::Error| ListenError::Inherited(e.to_string());
    let mut fds = sd_notify::listen_fds().map_err(inherited)?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.next().is_some() {
        return Err(ListenError::Inherited(
            "more than one socket was passed; brokerd serves one (check the .socket unit)".into(),
        ));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: sd_listen_fds hands the fd over to this process, and it is taken exactly once.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    listening_socket(owned, "the .socket unit needs ListenStream=").map(Some)
}

/// A passed descriptor, once it is known to be a listening stream socket; `fix` says what the
/// service's definition needs otherwise.
fn listening_socket(
    owned: std::os::fd::OwnedFd,
    fix: &str,
) -> Result<std::os::unix::net::UnixListener, ListenError> {
    let inherited = |e: std::io::Error| ListenError::Inherited(e.to_string());
    let kind = rustix::net::sockopt::socket_type(&owned).map_err(|e| inherited(e.into()))?;
    let listening = is_listening(&owned).map_err(inherited)?;
    if kind != rustix::net::SocketType::STREAM || !listening {
        return Err(ListenError::Inherited(format!(
            "it is not a listening stream socket ({fix})"
        )));
    }
    Ok(std::os::unix::net::UnixListener::from(owned))
}

/// launchd's socket activation (macOS): the LaunchAgent's `Sockets` entry `Listeners`, which
/// launchd binds and listens on before it starts brokerd, and starts brokerd for when a client
/// connects. brokerd takes it with `launch_activate_socket`.
pub mod launchd {
    use std::os::fd::OwnedFd;

    use super::ListenError;

    /// The name of the entry in the agent's `Sockets` dictionary.
    pub const SOCKETS_KEY: &str = "Listeners";

    /// What launch_activate_socket's answer means: the one socket, none (brokerd was not
    /// started by launchd, or by an agent without the entry, such as `brew services`'), or an
    /// agent that is set up wrong.
    pub fn answer(code: i32, fds: Vec<OwnedFd>) -> Result<Option<OwnedFd>, ListenError> {
        match code {
            0 => {
                let count = fds.len();
                let mut fds = fds.into_iter();
                match (fds.next(), count) {
                    (fd, 0 | 1) => Ok(fd),
                    // The extra ones close as they drop.
                    (_, many) => Err(ListenError::Inherited(format!(
                        "launchd passed {many} sockets for {SOCKETS_KEY}; brokerd serves one \
                         (check the LaunchAgent's SockPathName)"
                    ))),
                }
            }
            code if code == libc::ESRCH || code == libc::ENOENT => Ok(None),
            code if code == libc::EALREADY => Err(ListenError::Inherited(
                "launchd's socket was already taken by this process".into(),
            )),
            code => Err(ListenError::Inherited(format!(
                "launchd did not pass its socket: {}",
                std::io::Error::from_raw_os_error(code)
            ))),
        }
    }

    #[cfg(target_os = "macos")]
    pub fn activate() -> Result<Option<OwnedFd>, ListenError> {
        use std::os::fd::FromRawFd;

        // <launch.h>, in libSystem since macOS 10.9.
        unsafe extern "C" {
            fn launch_activate_socket(
                name: *const libc::c_char,
                fds: *mut *mut libc::c_int,
                cnt: *mut libc::size_t,
            ) -> libc::c_int;
        }
        let name = std::ffi::CString::new(SOCKETS_KEY)
            .map_err(|e| ListenError::Inherited(e.to_string()))?;
        let mut array: *mut libc::c_int = std::ptr::null_mut();
        let mut count: libc::size_t = 0;
        // SAFETY: the name is a NUL-terminated string that outlives the call; both
        // out-parameters are valid for writes.
        let code = unsafe { launch_activate_socket(name.as_ptr(), &raw mut array, &raw mut count) };
        let mut fds = Vec::new();
        if code == 0 && !array.is_null() {
            for i in 0..count {
                // SAFETY: on success launchd's array holds `count` descriptors, each handed to
                // this process and taken exactly once here.
                fds.push(unsafe { OwnedFd::from_raw_fd(*array.add(i)) });
            }
        }
        if !array.is_null() {
            // SAFETY: the array was allocated by launch_activate_socket for the caller to free,
            // and is not used after this.
            unsafe { libc::free(array.cast()) };
        }
        answer(code, fds)
    }

    /// Only launchd passes sockets this way.
    #[cfg(not(target_os = "macos"))]
    pub fn activate() -> Result<Option<OwnedFd>, ListenError> {
        Ok(None)
    }
}

/// Whether `socket` is listening (SO_ACCEPTCONN).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_listening(socket: &std::os::fd::OwnedFd) -> std::io::Result<bool> {
    Ok(rustix::net::sockopt::socket_acceptconn(socket)?)
}

/// Whether `socket` is listening (SO_ACCEPTCONN), which rustix leaves out on Apple platforms
/// although their kernels answer it.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn is_listening(socket: &std::os::fd::OwnedFd) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the call (borrowed from `socket`), and the kernel
    // writes at most `len` bytes into `value`, which is that large.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value != 0)
}

/// Adopts a socket passed by a service manager, after the checks a bound one gets: a Unix
/// socket with a path, in a private directory of the user's.
pub fn adopt(socket: std::os::unix::net::UnixListener, uid: u32) -> Result<Listener, ListenError> {
    let path = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .ok_or_else(|| {
            ListenError::Inherited(
                "it has no file system path (the .socket unit needs ListenStream=/path)".into(),
            )
        })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| ListenError::NoParent(path.clone()))?;
    check_private_dir(dir, uid)?;
    let meta = fs::symlink_metadata(&path).map_err(|source| ListenError::Io {
        path: path.clone(),
        source,
    })?;
    if meta.uid() != uid {
        return Err(ListenError::Inherited(format!(
            "{} belongs to uid {}, not to uid {uid}",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        // The private directory already keeps others out; the socket is closed as well, as a
        // bound one would be (a .socket unit without SocketMode=0600 leaves it open).
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            ListenError::Io {
                path: path.clone(),
                source,
            }
        })?;
        tracing::info!(
            "{} was mode {:04o}; made it 0600",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    let lock = lock_exclusive(&path)?;
    socket
        .set_nonblocking(true)
        .map_err(|source| ListenError::Io {
            path: path.clone(),
            source,
        })?;
    Ok(Listener {
        socket,
        path,
        inherited: true,
        _lock: lock,
    })
}

/// Held by a brokerd started on demand from the moment it decides to start until it serves
/// (or gives up), so that of many clients racing to start brokerd, one does.
pub struct StartLock(#[allow(dead_code)] File);

/// What a brokerd started on demand finds once it holds the start lock.
pub enum StartTurn {
    /// Another brokerd serves the socket already: nothing to start.
    Serving,
    /// Nobody serves it: this process starts, holding the lock until it is ready.
    Ours(StartLock),
}

/// Waits (at most `patience`) for the start lock of `path`, then looks whether a daemon
/// answers. Creates the socket directory (private) if needed.
pub fn start_turn(
    path: &Path,
    uid: u32,
    patience: std::time::Duration,
) -> Result<StartTurn, ListenError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| ListenError::NoParent(path.to_path_buf()))?;
    private_dir(dir, uid)?;
    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(sibling(path, ".start"))
        .map_err(io)?;
    // flock has no timeout: it blocks on a thread of its own, and the wait here has one.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive);
        let _ = tx.send(locked.map(|()| file));
    });
    let file = match rx.recv_timeout(patience) {
        Ok(Ok(file)) => file,
        Ok(Err(e)) => return Err(io(e.into())),
        Err(_) => {
            return Err(ListenError::StartTimeout {
                path: path.to_path_buf(),
                seconds: patience.as_secs(),
            });
        }
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Ok(StartTurn::Serving);
    }
    Ok(StartTurn::Ours(StartLock(file)))
}

/// Binds `path` for the user `uid`, after checking (or creating) its directory.
pub fn bind(path: &Path, uid: u32) -> Result<Listener, ListenError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| ListenError::NoParent(path.to_path_buf()))?;
    private_dir(dir, uid)?;

    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let lock = lock_exclusive(path)?;

    // We hold the lock, so nobody else is serving or starting: whatever socket is there is a
    // leftover. Still, refuse to delete anything that is not a socket, and double-check that
    // nothing answers on it.
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::AlreadyRunning {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!("replacing the stale socket {}", path.display());
            fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }

    let socket = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    Ok(Listener {
        socket,
        path: path.to_path_buf(),
        inherited: false,
        _lock: lock,
    })
}

/// The lock that says one daemon serves `path`, held for the daemon's life.
fn lock_exclusive(path: &Path) -> Result<File, ListenError> {
    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(sibling(path, ".lock"))
        .map_err(io)?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(lock),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ListenError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io(e.into())),
    }
}

/// `broker.sock` + `suffix`, beside it.
fn sibling(socket: &Path, suffix: &str) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    socket.with_file_name(name)
}

/// Creates `dir` 0700 if missing; otherwise checks it is ours and private.
fn private_dir(dir: &Path, uid: u32) -> Result<(), ListenError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => {
            return Err(ListenError::CreateDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    check_private_dir(dir, uid)
}

/// Checks that `dir` is a real directory, owned by `uid`, closed to everyone else, below
/// directories no other user can change: what clients check too. Also what `brokerctl doctor`
/// asks of the socket directory.
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), ListenError> {
    Ok(broker_proto::socket::check_dir(dir, uid)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        broker_proto::current_uid()
    }

    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn descriptors(n: usize) -> Vec<std::os::fd::OwnedFd> {
        (0..n)
            .map(|_| File::open("/dev/null").unwrap().into())
            .collect()
    }

    #[test]
    fn launchds_answer_is_one_socket_none_or_a_plain_reason() {
        use launchd::answer;
        assert!(answer(0, descriptors(1)).unwrap().is_some());
        // Started from a terminal or on demand, or by `brew services`' agent (no such entry).
        assert!(answer(libc::ESRCH, Vec::new()).unwrap().is_none());
        assert!(answer(libc::ENOENT, Vec::new()).unwrap().is_none());
        assert!(answer(0, Vec::new()).unwrap().is_none());
        let many = answer(0, descriptors(2)).unwrap_err().to_string();
        assert!(many.contains("passed 2 sockets for Listeners"), "{many}");
        let again = answer(libc::EALREADY, Vec::new()).unwrap_err().to_string();
        assert!(again.contains("already taken"), "{again}");
        let other = answer(libc::EPERM, Vec::new()).unwrap_err().to_string();
        assert!(other.contains("launchd did not pass its socket"), "{other}");
    }

    #[test]
    fn a_passed_socket_must_be_a_listening_stream_socket() {
        let dir = private_tempdir();
        let bound = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let owned: std::os::fd::OwnedFd = bound.into();
        assert!(listening_socket(owned, "fix").is_ok());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let error = listening_socket(a.into(), "the fix")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not a listening stream socket (the fix)"),
            "{error}"
        );
    }

    #[test]
    fn creates_a_private_directory_and_socket() {
        let tmp = private_tempdir();
        let path = tmp.path().join("run/token-broker/broker.sock");
        let listener = bind(&path, uid()).unwrap();
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        drop(listener);
    }

    #[test]
    fn refuses_an_open_directory() {
        let tmp = private_tempdir();
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind(&dir.join("broker.sock"), uid()).err().unwrap();
        assert!(
            matches!(err, ListenError::Dir(DirProblem::Mode { mode: 0o755, .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn refuses_a_directory_of_another_user() {
        let tmp = private_tempdir();
        let err = bind(&tmp.path().join("broker.sock"), uid() + 1)
            .err()
            .unwrap();
        assert!(
            matches!(err, ListenError::Dir(DirProblem::Owner { .. })),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_symlinked_directory() {
        let tmp = private_tempdir();
        let real = tmp.path().join("real");
        fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = bind(&link.join("broker.sock"), uid()).err().unwrap();
        assert!(
            matches!(err, ListenError::Dir(DirProblem::Symlink { .. })),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_directory_below_one_another_user_can_change() {
        let tmp = private_tempdir();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("token-broker/broker.sock"), uid())
            .err()
            .unwrap();
        assert!(
            matches!(err, ListenError::Dir(DirProblem::OpenAncestor { .. })),
            "{err}"
        );
    }

    #[test]
    fn one_daemon_per_path_and_stale_sockets_are_replaced() {
        let tmp = private_tempdir();
        let path = tmp.path().join("broker.sock");
        let first = bind(&path, uid()).unwrap();
        let err = bind(&path, uid()).err().unwrap();
        assert!(matches!(err, ListenError::AlreadyRunning { .. }), "{err}");
        // The first daemon dies without cleaning up: its socket file stays behind.
        drop(first);
        assert!(path.exists());
        let second = bind(&path, uid()).unwrap();
        drop(second);
    }

    #[test]
    fn never_deletes_a_file_that_is_not_a_socket() {
        let tmp = private_tempdir();
        let path = tmp.path().join("broker.sock");
        fs::write(&path, b"precious").unwrap();
        let err = bind(&path, uid()).err().unwrap();
        assert!(matches!(err, ListenError::NotASocket { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }
}
