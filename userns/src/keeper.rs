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
//! range added later must not be hidden by an old namespace). `kill` of the keeper is always
//! safe: the next run makes a new namespace.

use std::fs;
use std::os::fd::AsFd as _;
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
/// (and nothing changed) when there is no usable keeper.
pub(crate) fn join(uid: u32) -> bool {
    let Some(path) = record_path() else {
        return false;
    };
    let Ok(text) = fs::read_to_string(&path) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        words.next().map(str::parse::<u32>),
        words.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    if !is_keeper(pid, start, uid) {
        return false;
    }
    let Ok(ns) = fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return false;
    };
    // Checked again after opening: the descriptor pins the namespace, the pid could be reused.
    if !is_keeper(pid, start, uid) {
        return false;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ns.as_fd());
    // SAFETY: the caller checked the process is single-threaded, as setns of a user namespace
    // requires; the descriptor is a namespace file.
    if unsafe { libc::setns(fd, libc::CLONE_NEWUSER) } != 0 {
        return false;
    }
    // Full capabilities in the joined namespace: a mount namespace of our own in it, so this
    // process's mounts are its own and go with it. (Should this fail, mounts fail later with
    // a clear error; there is no way back out of the user namespace.)
    // SAFETY: single-threaded, as above.
    unsafe { libc::unshare(libc::CLONE_NEWNS) };
    true
}

/// Whether `pid` is this user's keeper started at `start`.
fn is_keeper(pid: u32, start: u64, uid: u32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim_end() == NAME && start_time(pid) == Some(start) && owner_uid(pid) == Some(uid)
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
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
    let recorded = start_time(pid).is_some_and(|start| {
        fs::write(&tmp, format!("{pid} {start}\n")).is_ok() && fs::rename(&tmp, path).is_ok()
    });
    if !recorded {
        // Nobody could find this keeper: it must not linger.
        let _ = fs::remove_file(&tmp);
        // SAFETY: ends this process.
        unsafe { libc::_exit(0) };
    }
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
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}
