//! A kept user namespace, as rootless podman's pause process: mapping a subordinate range
//! costs two runs of the setuid `newuidmap`/`newgidmap` (about 10 ms, more than a whole cached
//! build), so the first rootless kiln of a user leaves a tiny process (`kiln-userns`, in its
//! own session, every descriptor closed, doing nothing but `pause`) that holds the namespace,
//! and later runs join it with `setns`, which the namespace's owner may do without help.
//!
//! The keeper is recorded in `$XDG_RUNTIME_DIR/kiln/userns.pid` (else the user's kiln data
//! directory) as `PID STARTTIME`; a record is used only when that process still runs with
//! that start time, belongs to the user and is named `kiln-userns`. Each joining process makes
//! its own mount namespace, so its mounts still disappear with it. Only namespaces with the
//! subordinate ranges mapped are kept (a single-id map costs nothing to make again, and a
//! range added later must not be hidden by an old namespace). The keeper ends by itself once its
//! record is gone or names another keeper (its directory removed, as a test's scratch HOME);
//! `kill` of it is always safe too: the next run makes a new namespace.

use std::fs;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;

/// The keeper's process name (`comm`).
const NAME: &str = "kiln-userns";

/// Where the keeper of `uid` is recorded, from the environment as the user set it.
pub(crate) fn record_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(run) => PathBuf::from(run).join("kiln"),
        None => match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            Some(data) => PathBuf::from(data).join("kiln"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".local/share/kiln"),
        },
    };
    Some(dir.join("userns.pid"))
}

/// Joins the recorded keeper's user namespace and makes a new mount namespace in it; `false`
/// (and nothing changed) when there is no usable keeper, or when the process runs several
/// threads (`setns` of a user namespace then fails).
pub(crate) fn join(uid: u32) -> bool {
    let Some((pid, start)) = record_path().and_then(|p| read_record(&p)) else {
        return false;
    };
    let joined = match pidfd_open(pid) {
        // A pidfd names that one process: checked once, it stays the keeper, and setns on it
        // (Linux 5.8+) fails once that process has exited, even if its pid is reused.
        Some(pidfd) => {
            if !is_keeper(pid, start, uid) {
                return false;
            }
            match setns(pidfd.as_raw_fd()) {
                Err(libc::EINVAL) => join_by_path(pid, start, uid),
                r => r.is_ok(),
            }
        }
        None => join_by_path(pid, start, uid),
    };
    if joined {
        // Full capabilities in the joined namespace: a mount namespace of our own in it, so
        // this process's mounts are its own and go with it. (Should this fail, mounts fail
        // later with a clear error; there is no way back out of the user namespace.)
        // SAFETY: single-threaded (setns of a user namespace succeeded).
        unsafe { libc::unshare(libc::CLONE_NEWNS) };
    }
    joined
}

/// The record's `PID STARTTIME`.
fn read_record(path: &std::path::Path) -> Option<(u32, u64)> {
    let text = fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// A pidfd of `pid` (Linux 5.3+), `None` where the kernel has none.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setns(fd, CLONE_NEWUSER)`; the error number on failure.
fn setns(fd: libc::c_int) -> Result<(), i32> {
    // SAFETY: plain syscall; the caller's process is single-threaded or the kernel refuses.
    if unsafe { libc::setns(fd, libc::CLONE_NEWUSER) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Kernels before 5.8 (setns takes no pidfd): through `/proc/PID/ns/user`, checking the
/// process again after opening it (the descriptor pins the namespace, the pid could be reused).
fn join_by_path(pid: u32, start: u64, uid: u32) -> bool {
    if !is_keeper(pid, start, uid) {
        return false;
    }
    let Ok(ns) = fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return false;
    };
    is_keeper(pid, start, uid) && setns(ns.as_raw_fd()).is_ok()
}

/// Whether `pid` is this user's keeper started at `start`.
fn is_keeper(pid: u32, start: u64, uid: u32) -> bool {
    stat(pid).is_some_and(|(comm, st)| comm == NAME && st == start) && owner_uid(pid) == Some(uid)
}

/// The command name and field 22 (start time) of `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_owned();
    let start = stat
        .get(close + 2..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    Some((comm, start))
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name).
fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// The real uid of `pid` (first field of `Uid:` in `/proc/PID/status`).
fn owner_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Leaves a keeper of the namespace this (single-threaded) process just entered. Best effort:
/// a failure only means the next run maps the ranges again.
pub(crate) fn spawn() {
    let Some(path) = record_path() else {
        return;
    };
    let Some(dir) = path.parent() else {
        return;
    };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [ready_r, ready_w] = fds;
    // SAFETY: the process is single-threaded (checked by the caller), so the child may run
    // any code; it never returns into the caller's code.
    match unsafe { libc::fork() } {
        -1 => {}
        0 => {
            // The intermediate child: a grandchild keeps, so nobody has to reap the keeper.
            // SAFETY: as above (still single-threaded).
            if unsafe { libc::fork() } == 0 {
                keep(&path, ready_w);
            }
            // SAFETY: ends the intermediate child without running the caller's exit code.
            unsafe { libc::_exit(0) };
        }
        child => {
            let mut status = 0;
            // SAFETY: waits for the intermediate child only, which exits at once; then waits
            // (at most a second) until the keeper has recorded itself or gone, so the next run
            // finds it.
            unsafe {
                libc::waitpid(child, &raw mut status, 0);
                libc::close(ready_w);
                let mut poll = libc::pollfd {
                    fd: ready_r,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&raw mut poll, 1, 1000) > 0 {
                    let mut byte = 0u8;
                    libc::read(ready_r, (&raw mut byte).cast(), 1);
                }
            }
        }
    }
    // SAFETY: our copy of the read end, not used after this.
    unsafe { libc::close(ready_r) };
}

/// The keeper: own session and mount namespace, records itself, tells the parent through
/// `ready`, closes every descriptor and pauses.
fn keep(path: &std::path::Path, ready: libc::c_int) -> ! {
    // SAFETY: plain syscalls on this process.
    unsafe {
        libc::setsid();
        libc::unshare(libc::CLONE_NEWNS);
        libc::chdir(c"/".as_ptr());
        libc::prctl(libc::PR_SET_NAME, c"kiln-userns".as_ptr(), 0, 0, 0);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let pid = std::process::id();
    let tmp = path.with_extension(format!("pid.{pid}"));
    let start = start_time(pid).filter(|start| {
        fs::write(&tmp, format!("{pid} {start}\n")).is_ok() && fs::rename(&tmp, path).is_ok()
    });
    let Some(start) = start else {
        // Nobody could find this keeper: it must not linger.
        let _ = fs::remove_file(&tmp);
        // SAFETY: ends this process.
        unsafe { libc::_exit(0) };
    };
    // SAFETY: `ready` is the pipe's write end; close_range then closes every inherited
    // descriptor (a harness waiting for EOF on a pipe must not wait on the keeper).
    unsafe {
        libc::write(ready, [1u8].as_ptr().cast(), 1);
        libc::close_range(0, u32::MAX, 0);
        if libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == 0 {
            libc::dup2(0, 1);
            libc::dup2(0, 2);
        }
    }
    wait_for_record_change(path, pid, start);
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Returns only where inotify is unavailable; otherwise ends the process once its record no
/// longer names it: deleted with the directory that held it (`rm -rf ~/.local/share/kiln`, a
/// test's scratch HOME) or replaced by a newer keeper's. Nobody can join it then, so it
/// would only linger.
fn wait_for_record_change(path: &std::path::Path, pid: u32, start: u64) {
    use std::os::unix::ffi::OsStrExt as _;
    let ours = || read_record(path) == Some((pid, start));
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: plain syscalls; `cpath` is a NUL-terminated path.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return;
    }
    let mask = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_ATTRIB;
    // SAFETY: as above.
    if unsafe { libc::inotify_add_watch(fd, cpath.as_ptr(), mask) } < 0 {
        return;
    }
    let mut events = [0u8; 1024];
    // Checked once the watch is in place: a record replaced before it is seen here.
    while ours() {
        // SAFETY: reads into `events`, which has room for the length given.
        let n = unsafe { libc::read(fd, events.as_mut_ptr().cast(), events.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
    // SAFETY: ends this process.
    unsafe { libc::_exit(0) };
}
