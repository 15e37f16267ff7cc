//! Signals: the init's SIGTERM handling (kill PID 1, or only note it), masks, and the reset of
//! dispositions a command must start with.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The host pid of the container's PID 1, read by the SIGTERM handler.
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_child_on_term(_signal: libc::c_int) {
    SIGTERM_SEEN.store(true, Ordering::SeqCst);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn sigterm_mask(how: libc::c_int) -> io::Result<()> {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        let ret = libc::sigprocmask(how, &raw const set, std::ptr::null_mut());
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Blocks SIGTERM (around fork and around reaping, so the handler never kills a reaped pid).
pub(crate) fn block_sigterm() -> io::Result<()> {
    sigterm_mask(libc::SIG_BLOCK)
}

/// Unblocks SIGTERM.
pub(crate) fn unblock_sigterm() -> io::Result<()> {
    sigterm_mask(libc::SIG_UNBLOCK)
}

/// Makes SIGTERM kill `child` with SIGKILL (0: only note it for [`sigterm_received`]).
pub(crate) fn forward_sigterm_as_kill(child: libc::pid_t) -> io::Result<()> {
    CHILD_PID.store(child, Ordering::SeqCst);
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = kill_child_on_term as *const () as libc::sighandler_t;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(libc::SIGTERM, &raw const action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

static SIGTERM_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_sigterm(_signal: libc::c_int) {
    SIGTERM_SEEN.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM only set a flag (read with [`sigterm_received`]) and interrupt a blocking
/// wait, so the caller can stop a child its own way. Unblocks SIGTERM.
pub(crate) fn sigterm_sets_flag() -> io::Result<()> {
    // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so waits
    // return EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note_sigterm as *const () as libc::sighandler_t;
        libc::sigemptyset(&raw mut action.sa_mask);
        if libc::sigaction(libc::SIGTERM, &raw const action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    unblock_sigterm()
}

/// Whether a SIGTERM arrived since [`sigterm_sets_flag`].
pub(crate) fn sigterm_received() -> bool {
    SIGTERM_SEEN.load(Ordering::SeqCst)
}

/// Waits until `pid` has exited, without reaping it; `Ok(false)` when a signal interrupted.
pub(crate) fn wait_exited_or_interrupted(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: zeroed siginfo is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    let ret = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted {
        return Ok(false);
    }
    Err(err)
}

/// Resets every ignored signal to its default action and empties the signal mask, so the
/// command starts like a fresh process (Rust ignores SIGPIPE; ignored signals survive exec).
/// Uses the raw syscall: libc's wrapper refuses its reserved real-time signals.
pub(crate) fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: reading the current action into a struct laid out as the kernel's.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                std::ptr::null::<KernelSigaction>(),
                &raw mut old,
                8,
            )
        };
        if ret != 0 || old.handler != libc::SIG_IGN {
            continue;
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: SIG_DFL with an empty mask; no handler code involved.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default,
                std::ptr::null_mut::<KernelSigaction>(),
                8,
            );
        }
    }
    // SAFETY: an empty set on the stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
    }
}

/// Restores the default SIGTERM disposition (in the forked container PID 1).
pub(crate) fn default_sigterm() {
    // SAFETY: resetting a disposition.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// `pidfd_open(2)`: a descriptor that names `pid` for as long as it is held (no reuse race).
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_signal(
    pidfd: std::os::fd::BorrowedFd<'_>,
    signal: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a live descriptor, no siginfo.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
