//! What brokerd does to its own process so that its memory, which holds every refresh token,
//! stays its own: no core dumps, no debugger attaching, and memory handed back after a burst.
//!
//! Called once, first thing in `main`, before a secret is loaded. Each step is best effort: a
//! failure is reported (and `brokerctl doctor` shows the result) but does not stop the daemon,
//! since refusing to run would leave the user with kubelogin's plaintext cache instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(unix)]
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::sync::Notify;

/// Windows: what brokerd's memory is open to, said at start-up and by doctor rather than
/// hidden. Windows Error Reporting writes no full dumps unless an administrator asks for them,
/// but any process of the user can read brokerd's memory.
#[cfg(windows)]
pub const UNPROTECTED_ON_WINDOWS: &str = "on Windows other processes of this user can read \
    brokerd's memory (no debugger protection is applied)";

/// Windows: nothing is done yet ([`UNPROTECTED_ON_WINDOWS`]).
#[cfg(windows)]
pub fn protect_process() -> Vec<String> {
    vec![UNPROTECTED_ON_WINDOWS.to_string()]
}

/// What [`protect_process`] could not do, one line each.
#[cfg(unix)]
pub fn protect_process() -> Vec<String> {
    let mut failures = Vec::new();
    // A core file would hold every token in memory, written wherever core_pattern says.
    let no_core = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, no_core) {
        failures.push(format!("cannot turn core dumps off: {e}"));
    }
    if let Err(e) = refuse_debuggers() {
        failures.push(format!("cannot refuse debuggers: {e}"));
    }
    failures
}

/// Linux: not dumpable, which also stops other processes of the same user (without
/// CAP_SYS_PTRACE) from attaching with ptrace or reading /proc/<pid>/mem.
#[cfg(target_os = "linux")]
fn refuse_debuggers() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// macOS: PT_DENY_ATTACH makes the kernel refuse any later ptrace attach to this process.
#[cfg(target_os = "macos")]
fn refuse_debuggers() -> std::io::Result<()> {
    // SAFETY: PT_DENY_ATTACH ignores its pid, address and data arguments.
    if unsafe { libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "macos"))))]
fn refuse_debuggers() -> std::io::Result<()> {
    Err(std::io::Error::other("not supported on this OS"))
}

/// Whether this process can be dumped or traced by its user: `Some(false)` once
/// [`protect_process`] has worked, `None` where the OS does not say.
pub fn dumpable() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::dumpable_behavior()
            .ok()
            .map(|b| b != rustix::process::DumpableBehavior::NotDumpable)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The core file size limit in bytes (0: no core dumps; `u64::MAX`: unlimited).
#[cfg(unix)]
pub fn core_limit() -> u64 {
    getrlimit(Resource::Core).current.unwrap_or(u64::MAX)
}

/// Windows has no core file limit; Windows Error Reporting decides.
#[cfg(windows)]
pub fn core_limit() -> u64 {
    u64::MAX
}

/// Raises the open-file limit to what the hard limit allows: every client connection is a
/// descriptor, and the usual soft limit of 1024 is less than a busy CI machine's parallel
/// kubectl runs.
#[cfg(unix)]
pub fn raise_open_file_limit() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    // macOS refuses more than OPEN_MAX for the soft limit, whatever the hard limit.
    let wanted = if cfg!(target_os = "macos") {
        Some(limit.maximum.map_or(10_240, |max| max.min(10_240)))
    } else {
        limit.maximum
    };
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: wanted,
            maximum: limit.maximum,
        },
    );
}

/// Windows has no per-process descriptor limit to raise.
#[cfg(windows)]
pub fn raise_open_file_limit() {}

/// How long brokerd must have been quiet before it hands free memory back.
const QUIET: Duration = Duration::from_secs(20);

/// Hands freed memory back to the OS once a burst of calls is over.
///
/// glibc's malloc keeps what a thousand connections freed in its per-thread arenas, so after
/// one burst the daemon would stay tens of megabytes larger for the rest of the day. Activity
/// marks the reclaimer busy (one atomic store per call); once a [`QUIET`] period passes with no
/// activity, it trims. When nothing happens, it sleeps without a timer: an idle daemon does not
/// wake up for it.
#[derive(Clone)]
pub struct Reclaimer {
    busy: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Reclaimer {
    /// Starts the reclaiming task on the current Tokio runtime.
    pub fn start() -> Self {
        let reclaimer = Reclaimer {
            busy: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Notify::new()),
        };
        let task = reclaimer.clone();
        tokio::spawn(async move {
            loop {
                task.wake.notified().await;
                // Trim only after a whole quiet period with no activity.
                loop {
                    tokio::time::sleep(QUIET).await;
                    if !task.busy.swap(false, Ordering::AcqRel) {
                        break;
                    }
                }
                trim();
            }
        });
        reclaimer
    }

    /// Notes activity; cheap enough for every call.
    pub fn poke(&self) {
        if !self.busy.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (macOS's, musl's) return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
