//! Whom a client talks to: the checks brokerd, broker-shim and brokerctl all make of the
//! socket's path, and the check a client makes of the process listening on it.
//!
//! A socket in a shared place (`/tmp/token-broker-<uid>/` when there is no `XDG_RUNTIME_DIR`)
//! can be set up by another local user before brokerd starts. A client that connected anyway
//! would send that user a client secret, accept a forged token and show its device code. So,
//! before a byte is sent:
//! - the socket's directory is a real directory (not a symbolic link), owned by the user, with
//!   no permission bits for group or others;
//! - no directory above it can be changed by another user: each is owned by the user or by
//!   root, and writable by group or others only when sticky (as `/tmp` is, where others cannot
//!   rename or remove what is not theirs);
//! - the socket itself, if there, is a socket owned by the user;
//! - and, once connected, the listening process runs as the user (`SO_PEERCRED` on Linux,
//!   `getpeereid` elsewhere).
//!
//! brokerd applies the first three to the path it binds, so that a path it accepts is one its
//! clients accept. Clients also accept a socket directory of root's that nobody else can write
//! ([`check_client_dir`]): where a container runtime mounts a forwarded socket.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What is wrong with a socket's directory, or a directory above it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirProblem {
    /// The directory does not exist (yet).
    Missing {
        path: PathBuf,
    },
    /// It cannot be examined.
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    Symlink {
        path: PathBuf,
    },
    NotADirectory {
        path: PathBuf,
    },
    Owner {
        path: PathBuf,
        owner: u32,
        uid: u32,
    },
    Mode {
        path: PathBuf,
        mode: u32,
    },
    /// A directory above it that another user could change.
    OpenAncestor {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
    /// The socket file is not a socket, or not the user's.
    Socket {
        path: PathBuf,
        why: String,
    },
}

impl fmt::Display for DirProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirProblem::Missing { path } => write!(f, "{} does not exist", path.display()),
            DirProblem::Unreadable { path, reason } => {
                write!(f, "cannot examine {}: {reason}", path.display())
            }
            DirProblem::Symlink { path } => write!(
                f,
                "the socket directory {} is a symbolic link; refusing to use it",
                path.display()
            ),
            DirProblem::NotADirectory { path } => {
                write!(f, "{} is not a directory", path.display())
            }
            DirProblem::Owner { path, owner, uid } => write!(
                f,
                "the socket directory {} belongs to uid {owner}, not to uid {uid}; refusing to \
                 use it (another user may be posing as brokerd: remove it, or set {} to a \
                 private path)",
                path.display(),
                crate::SOCKET_ENV
            ),
            DirProblem::Mode { path, mode } => write!(
                f,
                "the socket directory {} has mode {mode:04o}; it must be private (run: chmod \
                 700 {})",
                path.display(),
                path.display()
            ),
            DirProblem::OpenAncestor { path, owner, mode } => write!(
                f,
                "{} (uid {owner}, mode {mode:04o}) can be changed by another user, who could \
                 swap the socket's directory; refusing to use a socket below it (make it \
                 yours and not writable by others, or set {} to a private path)",
                path.display(),
                crate::SOCKET_ENV
            ),
            DirProblem::Socket { path, why } => {
                write!(f, "{} {why}; refusing to use it", path.display())
            }
        }
    }
}

impl std::error::Error for DirProblem {}

/// What a client accepts of the directory its socket is in: what brokerd demands
/// ([`check_dir`]), or a directory of root's that nobody else can write to. Only root or the
/// user can have put a socket there, and the socket file and the listener are checked as the
/// user's own after this. That is where container runtimes make a bind mount's mount point
/// (a devcontainer given forward.sock), and where an administrator may put it.
pub fn check_client_dir(dir: &Path, uid: u32) -> Result<(), DirProblem> {
    match check_dir(dir, uid) {
        Err(DirProblem::Owner { owner: 0, .. }) => {
            let meta = fs::symlink_metadata(dir).map_err(|e| examine_error(dir, &e))?;
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(DirProblem::Mode {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
            check_ancestors(dir, uid)
        }
        other => other,
    }
}

/// Checks that `dir` may hold `uid`'s private socket: the directory itself, then every
/// directory above it (as written, and as symbolic links resolve).
pub fn check_dir(dir: &Path, uid: u32) -> Result<(), DirProblem> {
    let meta = fs::symlink_metadata(dir).map_err(|e| examine_error(dir, &e))?;
    let path = dir.to_path_buf();
    if meta.file_type().is_symlink() {
        return Err(DirProblem::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(DirProblem::NotADirectory { path });
    }
    if meta.uid() != uid {
        return Err(DirProblem::Owner {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DirProblem::Mode { path, mode });
    }
    check_ancestors(dir, uid)
}

/// Every directory above `dir`, as written and as resolved, is one only `uid` or root can
/// change.
fn check_ancestors(dir: &Path, uid: u32) -> Result<(), DirProblem> {
    let absolute = std::path::absolute(dir).map_err(|e| examine_error(dir, &e))?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    for ancestor in parent.ancestors() {
        check_ancestor(ancestor, uid, true)?;
    }
    // A symbolic link above (macOS's /tmp → private/tmp) leads elsewhere: that path too.
    let resolved = fs::canonicalize(parent).map_err(|e| examine_error(parent, &e))?;
    if resolved != parent {
        for ancestor in resolved.ancestors() {
            check_ancestor(ancestor, uid, false)?;
        }
    }
    Ok(())
}

fn check_ancestor(path: &Path, uid: u32, links_allowed: bool) -> Result<(), DirProblem> {
    let meta = fs::symlink_metadata(path).map_err(|e| examine_error(path, &e))?;
    if meta.file_type().is_symlink() && links_allowed {
        // Who can replace the link is a matter of the directory holding it, checked as the
        // next ancestor; where it leads is checked through the resolved path.
        return Ok(());
    }
    let owner = meta.uid();
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if (owner != uid && owner != 0) || (mode & 0o022 != 0 && !sticky) {
        return Err(DirProblem::OpenAncestor {
            path: path.to_path_buf(),
            owner,
            mode,
        });
    }
    Ok(())
}

fn examine_error(path: &Path, error: &std::io::Error) -> DirProblem {
    if error.kind() == std::io::ErrorKind::NotFound {
        DirProblem::Missing {
            path: path.to_path_buf(),
        }
    } else {
        DirProblem::Unreadable {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// Checks the socket at `path`, if there is one: a socket, owned by `uid`. A missing socket is
/// no problem here (nothing listens; a client may start brokerd).
pub fn check_socket_file(path: &Path, uid: u32) -> Result<(), DirProblem> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(examine_error(path, &e)),
    };
    let socket = |why: String| DirProblem::Socket {
        path: path.to_path_buf(),
        why,
    };
    if !meta.file_type().is_socket() {
        return Err(socket("is not a socket".into()));
    }
    if meta.uid() != uid {
        return Err(socket(format!(
            "belongs to uid {}, not to uid {uid}",
            meta.uid()
        )));
    }
    Ok(())
}

/// The directory a socket path lives in.
pub fn socket_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

/// The uid of the process at the other end of a connected Unix socket.
#[cfg(target_os = "linux")]
pub fn peer_uid(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a ucred and `len` its size, as SO_PEERCRED requires; the descriptor
    // is borrowed for the duration of the call.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The uid of the process at the other end of a connected Unix socket.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn peer_uid(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: both out-parameters are valid for writes; the descriptor is borrowed for the
    // duration of the call.
    if unsafe { libc::getpeereid(socket.as_raw_fd(), &raw mut uid, &raw mut gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(uid)
}

/// The listening process is not the user's own.
#[derive(Debug)]
pub struct ForeignPeer {
    pub path: PathBuf,
    pub peer: u32,
    pub uid: u32,
}

impl fmt::Display for ForeignPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the process listening on {} runs as uid {}, not as uid {}: it is not your brokerd; \
             nothing was sent to it",
            self.path.display(),
            self.peer,
            self.uid
        )
    }
}

impl std::error::Error for ForeignPeer {}

/// Checks that a freshly connected socket's listener runs as `uid`.
pub fn check_peer(
    socket: &impl std::os::fd::AsRawFd,
    path: &Path,
    uid: u32,
) -> std::io::Result<()> {
    let peer = peer_uid(socket)?;
    if peer != uid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            ForeignPeer {
                path: path.to_path_buf(),
                peer,
                uid,
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    fn uid() -> u32 {
        crate::current_uid()
    }

    /// A private directory that itself passes the ancestor rule (the system temp dir does).
    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn mkdir(path: &Path, mode: u32) {
        fs::DirBuilder::new().mode(mode).create(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A mount point a container runtime made (root's, 0755) may hold the user's socket as
    /// far as a client is concerned; one that others can write to may not.
    #[test]
    fn a_client_takes_a_directory_of_roots_that_nobody_else_can_write() {
        if uid() != 0 {
            // Only root can make a directory of root's (CI runs the tests as root).
            return;
        }
        let tmp = private_tempdir();
        let mount = tmp.path().join("run-token-broker");
        mkdir(&mount, 0o755);
        let user = 1000;
        assert!(matches!(
            check_dir(&mount, user),
            Err(DirProblem::Owner { owner: 0, .. })
        ));
        check_client_dir(&mount, user).unwrap();
        fs::set_permissions(&mount, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(matches!(
            check_client_dir(&mount, user),
            Err(DirProblem::Mode { mode: 0o775, .. })
        ));
    }

    #[test]
    fn a_private_directory_below_private_or_sticky_ones_passes() {
        let tmp = private_tempdir();
        let dir = tmp.path().join("token-broker");
        mkdir(&dir, 0o700);
        check_dir(&dir, uid()).unwrap();
        // A sticky, world-writable ancestor (as /tmp is) is fine.
        let sticky = tmp.path().join("sticky");
        mkdir(&sticky, 0o1777);
        let inner = sticky.join("token-broker-1");
        mkdir(&inner, 0o700);
        check_dir(&inner, uid()).unwrap();
    }

    #[test]
    fn the_directory_itself_must_be_private_real_and_ours() {
        let tmp = private_tempdir();
        let open = tmp.path().join("open");
        mkdir(&open, 0o755);
        assert!(matches!(
            check_dir(&open, uid()),
            Err(DirProblem::Mode { mode: 0o755, .. })
        ));
        let real = tmp.path().join("real");
        mkdir(&real, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            check_dir(&link, uid()),
            Err(DirProblem::Symlink { .. })
        ));
        let theirs = check_dir(&real, uid() + 1).unwrap_err();
        assert!(matches!(theirs, DirProblem::Owner { .. }), "{theirs}");
        assert!(theirs.to_string().contains(crate::SOCKET_ENV), "{theirs}");
        assert!(matches!(
            check_dir(&tmp.path().join("missing"), uid()),
            Err(DirProblem::Missing { .. })
        ));
    }

    #[test]
    fn a_directory_above_that_others_can_write_is_refused() {
        let tmp = private_tempdir();
        let shared = tmp.path().join("shared");
        mkdir(&shared, 0o777);
        let dir = shared.join("token-broker");
        mkdir(&dir, 0o700);
        let problem = check_dir(&dir, uid()).unwrap_err();
        assert!(
            matches!(&problem, DirProblem::OpenAncestor { path, mode: 0o777, .. } if *path == shared),
            "{problem}"
        );
        assert!(!problem.to_string().contains('\n'));
        // Group-writable is as bad, unless sticky.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o770)).unwrap();
        assert!(check_dir(&dir, uid()).is_err());
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1770)).unwrap();
        check_dir(&dir, uid()).unwrap();
    }

    #[test]
    fn a_link_above_is_followed_and_its_target_checked() {
        let tmp = private_tempdir();
        let open = tmp.path().join("open");
        mkdir(&open, 0o777);
        let target = open.join("target");
        mkdir(&target, 0o700);
        mkdir(&target.join("token-broker"), 0o700);
        let link = tmp.path().join("via-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let problem = check_dir(&link.join("token-broker"), uid()).unwrap_err();
        assert!(
            matches!(&problem, DirProblem::OpenAncestor { path, .. } if *path == open),
            "{problem}"
        );
    }

    #[test]
    fn a_socket_file_must_be_a_socket() {
        let tmp = private_tempdir();
        let path = tmp.path().join("broker.sock");
        check_socket_file(&path, uid()).unwrap();
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            check_socket_file(&path, uid()),
            Err(DirProblem::Socket { .. })
        ));
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), uid());
        check_peer(&a, Path::new("/x"), uid()).unwrap();
        let err = check_peer(&a, Path::new("/x"), uid() + 1).unwrap_err();
        assert!(err.to_string().contains("is not your brokerd"), "{err}");
    }
}
