//! A process without the kernel keyring, as containers run it: a seccomp filter that answers
//! `add_key`, `keyctl` and `request_key` with EPERM, as Docker's default profile does. Lets a
//! test see what brokerd does where keyctl is blocked, on the real kernel.

use std::process::Command;

/// `AUDIT_ARCH_*` of the architectures the filter knows (linux/audit.h): the ELF machine with
/// the 64-bit and little-endian flags.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xc000_00b7;

/// Offsets in `struct seccomp_data`: the syscall number, then the architecture.
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The filter: keyring calls fail with EPERM, everything else is allowed.
fn filter() -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let allow = statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    let deny = statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    );
    vec![
        statement(load, ARCH_OFFSET),
        // Another architecture's numbers mean other calls: allow (tests run natively).
        jump_if(ARCH, 1, 0),
        allow,
        statement(load, NR),
        jump_if(libc::SYS_add_key as u32, 3, 0),
        jump_if(libc::SYS_keyctl as u32, 2, 0),
        jump_if(libc::SYS_request_key as u32, 1, 0),
        allow,
        deny,
    ]
}

/// Makes the process `command` starts run without keyctl.
pub fn without_keyctl(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let program = filter();
    // SAFETY: between fork and exec the closure makes only two prctl calls (async-signal-safe
    // system calls) on a filter built before the fork, which outlives the call.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
