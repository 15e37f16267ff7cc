//! How a process becomes the container init without any help from its `main`.
//!
//! The executor re-executes a binary (by default the caller's own, `/proc/self/exe`) with the
//! sentinel `argv[1]` [`INIT_ARG`]. This crate puts a function pointer in the ELF
//! `.init_array` of every binary that links it: the dynamic loader (or a static binary's libc
//! start code) calls it before `main`, before Rust's runtime, libtest or tokio start a thread
//! or read an argument. glibc passes it `argc`, `argv` and `envp`; when `argv[1]` is the
//! sentinel it runs the container init and `_exit`s, so the embedder's `main` never runs in
//! the init. For any other process the cost is one string comparison.
//!
//! Defence in depth, for a binary where the constructor did not run (a C library that does
//! not call `.init_array` with arguments, a linker that dropped it):
//! - the parent marks the child with [`INIT_MARK_ENV`] = its pid (nothing else of its
//!   environment is passed); a process carrying the mark of its parent that reaches
//!   [`crate::Executor::new`] (its `main`
//!   started a build again, which used to recurse without end) reports the failure to the
//!   parent over its stdin socket and exits 125 at once;
//! - the parent waits at most [`HANDSHAKE_TIMEOUT`] for the init's first event and otherwise
//!   kills it and fails with a message saying what to do.

use std::ffi::{CStr, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::proto::{INIT_ARG, InitEvent};
use crate::sys;

/// The environment variable the parent sets (to its pid) on the init it spawns. Only the
/// re-executed init ever has it: the container's command gets the step's environment.
pub(crate) const INIT_MARK_ENV: &str = "KILN_EXECUTOR_INIT_OF";

/// How long the parent waits for the init's first event before it gives up.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The exit code of a marked process that reached normal code instead of the init.
pub(crate) const NOT_AN_INIT_EXIT: i32 = 125;

type Constructor =
    extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char);

/// The `.init_array` entry. Priority 101 (the first one not reserved for the C/C++ runtime)
/// runs it before every constructor without a priority, such as C++ static initialisers that
/// might start threads; the Rust standard library's own argument capture (priority 99) has
/// run by then.
#[used]
#[unsafe(link_section = ".init_array.00101")]
pub(crate) static INIT_CONSTRUCTOR: Constructor = init_constructor;

extern "C" fn init_constructor(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if !started_as_init(argc, argv) {
        return;
    }
    // A panic must not unwind into the C start code.
    let code = std::panic::catch_unwind(crate::init::init_main).unwrap_or(126);
    sys::exit_now(code)
}

/// Whether `argv[1]` is the sentinel: from the constructor's arguments with glibc, else from
/// /proc/self/cmdline (musl calls `.init_array` functions without arguments).
fn started_as_init(argc: libc::c_int, argv: *const *const libc::c_char) -> bool {
    if cfg!(target_env = "gnu") {
        if argc < 2 || argv.is_null() {
            return false;
        }
        // SAFETY: glibc passes the process's argv, `argc` valid pointers followed by NULL.
        let arg1 = unsafe { *argv.add(1) };
        if arg1.is_null() {
            return false;
        }
        // SAFETY: a NUL-terminated argument string that lives as long as the process.
        unsafe { CStr::from_ptr(arg1) }.to_bytes() == INIT_ARG.as_bytes()
    } else {
        std::fs::read("/proc/self/cmdline")
            .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).nth(1) == Some(INIT_ARG.as_bytes()))
    }
}

/// Keeps the constructor in the final binary: called from the code paths every user of the
/// executor goes through ([`crate::Executor::new`], [`init_main_if_requested`]).
pub(crate) fn keep_constructor() {
    std::hint::black_box(&INIT_CONSTRUCTOR);
}

/// Fails at once in a process that the executor started as its init but that is running
/// normal code (its constructor did not run): tells the parent over the socket (stdin) and
/// exits, so a `main` that starts a build never recurses.
pub(crate) fn refuse_if_marked() {
    // The mark names the parent that spawned us: a stale or hand-set variable (whose pid is
    // not our parent's) is ignored.
    let Some(parent) = std::env::var_os(INIT_MARK_ENV) else {
        return;
    };
    if parent.to_str().and_then(|p| p.parse::<i32>().ok()) != Some(sys::getppid()) {
        return;
    }
    let exe = std::fs::read_link("/proc/self/exe").map_or_else(
        |_| "this binary".to_owned(),
        |p| format!("`{}`", p.display()),
    );
    let message = format!(
        "{exe} was started as the container init of kiln process {} but ran its own main: \
         its kiln-executor constructor (.init_array) did not run; build it for a glibc target, \
         or set `ExecutorConfig::init_binary` (`Builder::init_binary`) to a binary whose main \
         calls `kiln_executor::init_main_if_requested()` first, such as `kiln`",
        OsStr::as_bytes(&parent).escape_ascii()
    );
    if let Ok(mut line) = serde_json::to_vec(&InitEvent::Failed { message }) {
        line.push(b'\n');
        // SAFETY: fd 0 is the socket to the parent in a marked process; a wrong fd only makes
        // the write fail. The File is forgotten, so fd 0 is not closed.
        let mut sock = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(0)
        });
        let _ = sock.write_all(&line);
    }
    sys::exit_now(NOT_AN_INIT_EXIT)
}

/// Runs the container init if this process was started as one (`argv[1]` is the sentinel)
/// and exits; otherwise returns at once.
///
/// Not needed any more: the init runs from a constructor of this crate before `main` (see the
/// crate docs). Kept so existing callers compile; calling it first thing in `main` is
/// harmless and still works where the constructor cannot run.
pub fn init_main_if_requested() {
    keep_constructor();
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(INIT_ARG)) {
        return;
    }
    sys::exit_now(crate::init::init_main())
}
