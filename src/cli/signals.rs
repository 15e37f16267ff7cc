//! SIGINT and SIGTERM for `kiln build`: the first one cancels the build through its
//! [`kiln::CancelHandle`] (running steps are killed, mounts and snapshots released, the
//! renderer shows `CANCELED`), then kiln exits 130 or 143 as a shell expects of a process the
//! signal ended. A second signal exits at once with the same status; whatever that leaves behind
//! is orphaned state the next kiln process removes.
//!
//! The handler only does what is async-signal-safe: it counts, and writes the signal number to a
//! pipe; a thread reading the pipe cancels the build. Handlers do not survive `exec`, so `RUN`
//! processes get the default dispositions.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Write end of the pipe the handler reports to (-1: none).
static PIPE: AtomicI32 = AtomicI32::new(-1);
/// Signals received so far.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The first signal received (0: none).
static FIRST: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if COUNT.fetch_add(1, Ordering::SeqCst) > 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write is async-signal-safe; the buffer is one valid byte.
        let _ = unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// Makes SIGINT and SIGTERM cancel `cancel` for the rest of the process's life.
pub(crate) fn cancel_on_signals(cancel: kiln::CancelHandle) -> std::io::Result<()> {
    let (read, write): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The write end lives as long as the process: the handler may run at any time.
    PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write);
    std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(move || {
            let mut f = std::fs::File::from(read);
            let mut b = [0u8; 1];
            if matches!(f.read(&mut b), Ok(1)) {
                cancel.cancel();
            }
        })?;
    install(&[libc::SIGINT, libc::SIGTERM], on_signal)
}

/// Installs `handler` for `signals` (SA_RESTART, nothing blocked). The handler must call only
/// async-signal-safe functions and touch only atomics.
pub(crate) fn install(
    signals: &[libc::c_int],
    handler: extern "C" fn(libc::c_int),
) -> std::io::Result<()> {
    for &sig in signals {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (above).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut sa.sa_mask);
            if libc::sigaction(sig, &raw const sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The exit status for the first signal received (130 for SIGINT, 143 for SIGTERM), if any.
pub(crate) fn exit_status() -> Option<u8> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        sig => u8::try_from(128 + sig).ok(),
    }
}
