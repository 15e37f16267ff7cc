//! Entering a user namespace for a rootless build, the way `buildah unshare` and rootless
//! podman do: the whole process moves into a new user and mount namespace where the user is
//! root, their own uid is mapped to 0 and their subordinate range (`/etc/subuid`,
//! `/etc/subgid`) to 1..; without a range, only the one id is mapped.
//!
//! The maps of a range can only be written by the setuid helpers `newuidmap`/`newgidmap` from
//! the parent namespace, so they are started (blocked on their stdin) *before* `unshare`: a
//! child started after it would land in the new namespace, where the helpers have no privilege.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::subid::{SubIdRange, read_subids};
use crate::{Error, IdMapping, Result, in_user_namespace};

/// How a helper is released: it waits for one line on stdin, then runs the map tool.
const HELPER_SCRIPT: &str = "read _ && exec \"$0\" \"$@\"";

/// How long a map helper may take once released.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where this process stands after [`enter_rootless`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// Root of the initial user namespace: nothing was done.
    Root,
    /// Already in a user namespace this crate did not make (`podman unshare`, a rootless
    /// container): it is used as it is.
    Inherited,
    /// The process moved into a new user and mount namespace (see [`Rootless`]).
    Entered(Rootless),
}

/// The namespace [`enter_rootless`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootless {
    /// The user's uid outside (owner of their files, and of the state directory).
    pub uid: u32,
    /// The user's gid outside.
    pub gid: u32,
    /// The user's name, when the user database knows it.
    pub user: Option<String>,
    /// The maps of the new namespace, as the kernel reports them.
    pub mapping: IdMapping,
    /// Why only the one id is mapped (no subordinate range, no `newuidmap`, a helper
    /// failed); `None` when the subordinate ranges are mapped.
    pub single_id: Option<String>,
}

/// The outcome of the first [`enter_rootless`], failures included: a failed attempt is not
/// retried (the process may be half inside a namespace, or running threads by then).
static STATE: Mutex<Option<std::result::Result<Entry, Error>>> = Mutex::new(None);

/// Makes this process able to build as an ordinary user, once: when it runs as a non-root user
/// in the initial user namespace, it moves **the whole process** (every later thread and child
/// with it) into a new user namespace and a new mount namespace, where it is uid and gid 0.
/// Idempotent: later calls return the first outcome (the same error, if it failed).
///
/// - Root in the initial namespace ([`Entry::Root`]) and a process already in a user namespace
///   ([`Entry::Inherited`]) are left as they are.
/// - The user's uid maps to 0 and the ranges `/etc/subuid` and `/etc/subgid` give them (by
///   name or numeric uid) to 1.., through `newuidmap`/`newgidmap` (package `uidmap`), so
///   files owned by other ids keep their ids. Without a range or the tools only the one id is
///   mapped ([`Rootless::single_id`] says why; [`crate::subid_hint`] tells the user what to
///   do).
/// - Mounts of the new mount namespace become slaves: nothing mounted afterwards (snapshots,
///   containers) is seen outside the process, and the mounts disappear with it.
/// - Environment variables (`HOME`, `XDG_*`) are unchanged; [`started_as_root`] still answers
///   for the user who started the process, so paths chosen before and after agree.
/// - Files the process creates belong to the user outside (or to their subordinate ids).
///
/// `unshare(CLONE_NEWUSER)` works only in a single-threaded process: call this first thing in
/// `main`, before anything starts a thread. A non-root process that already runs several
/// threads gets [`Error::MultiThreaded`].
pub fn enter_rootless() -> Result<Entry> {
    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    match state.as_ref() {
        Some(Ok(entry)) => return Ok(entry.clone()),
        Some(Err(e)) => return Err(e.duplicate()),
        None => {}
    }
    let uid = rustix::process::geteuid().as_raw();
    let entry = if in_user_namespace() {
        Ok(Entry::Inherited)
    } else if uid == 0 {
        Ok(Entry::Root)
    } else {
        enter_new(uid, rustix::process::getegid().as_raw()).map(Entry::Entered)
    };
    if let Ok(Entry::Entered(_)) = &entry {
        crate::IN_USER_NAMESPACE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let out = match &entry {
        Ok(e) => Ok(e.clone()),
        Err(e) => Err(e.duplicate()),
    };
    *state = Some(entry);
    out
}

/// The namespace [`enter_rootless`] made, if it made one.
pub fn rootless() -> Option<Rootless> {
    match STATE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        Some(Ok(Entry::Entered(r))) => Some(r.clone()),
        _ => None,
    }
}

/// Whether the user who started this process is root: euid 0 and not moved into a user
/// namespace by [`enter_rootless`] (inside which every rootless user is uid 0 too). Use it to
/// choose per-user paths such as the state directory.
pub fn started_as_root() -> bool {
    rustix::process::geteuid().is_root() && rootless().is_none()
}

fn enter_new(uid: u32, gid: u32) -> Result<Rootless> {
    // The kept namespace first, before anything else: a cached build needs nothing more (the
    // kernel refuses the join in a threaded process, which the check below then reports).
    if crate::keeper::join(uid) {
        make_mounts_slaves();
        return Ok(Rootless {
            uid,
            gid,
            user: user_name(uid),
            mapping: IdMapping::current()?,
            single_id: None,
        });
    }
    let threads = thread_count()?;
    if threads > 1 {
        return Err(Error::MultiThreaded { threads });
    }
    let user = user_name(uid);
    let subuids = read_subids("/etc/subuid", user.as_deref(), uid);
    let subgids = read_subids("/etc/subgid", user.as_deref(), uid);
    let pid = std::process::id();
    let name = user.as_deref().unwrap_or("this user");
    let mut single_id = None;
    let helpers = if subuids.is_empty() || subgids.is_empty() {
        let file = if subuids.is_empty() {
            "/etc/subuid"
        } else {
            "/etc/subgid"
        };
        single_id = Some(format!("no subordinate id range for {name} in {file}"));
        None
    } else {
        match (find_tool("newuidmap"), find_tool("newgidmap")) {
            (Some(u), Some(g)) => {
                let hu = spawn_helper(&u, pid, uid, &subuids)?;
                match spawn_helper(&g, pid, gid, &subgids) {
                    Ok(hg) => Some((hu, hg)),
                    Err(e) => {
                        abort(hu);
                        return Err(e);
                    }
                }
            }
            _ => {
                single_id = Some("newuidmap/newgidmap not found (apt-get install uidmap)".into());
                None
            }
        }
    };
    let flags = rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS;
    // SAFETY: the process is single-threaded (checked above) and no file table or fs context
    // is unshared; the new namespaces apply to this only thread, hence to the whole process.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(flags) } {
        if let Some((hu, hg)) = helpers {
            abort(hu);
            abort(hg);
        }
        return Err(Error::Unshare { source: e.into() });
    }
    let (mut uid_mapped, mut gid_mapped) = (false, false);
    if let Some((mut hu, mut hg)) = helpers {
        // Both at once: the two maps are independent, and each helper takes milliseconds.
        release(&mut hu);
        release(&mut hg);
        let (u, g) = (finish(hu, "newuidmap"), finish(hg, "newgidmap"));
        uid_mapped = u.is_ok();
        gid_mapped = g.is_ok();
        single_id = u.err().or(g.err());
    }
    if !uid_mapped {
        write_proc("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
    }
    if !gid_mapped {
        write_proc("/proc/self/setgroups", "deny\n")?;
        write_proc("/proc/self/gid_map", &format!("0 {gid} 1\n"))?;
    }
    if single_id.is_none() {
        // Before any mount and any thread: later runs join this namespace (see keeper.rs).
        crate::keeper::spawn();
    }
    make_mounts_slaves();
    Ok(Rootless {
        uid,
        gid,
        user,
        mapping: IdMapping::current()?,
        single_id,
    })
}

/// Slaves: mounts made here never propagate out. `/` may not be a mount point (a chroot):
/// then there is nothing shared to change, the kernel already made inherited mounts slaves.
fn make_mounts_slaves() {
    let _ = rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    );
}

/// Number of threads of this process (`Threads:` of `/proc/self/status`).
fn thread_count() -> Result<usize> {
    let path = "/proc/self/status";
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("read {path}"),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::Malformed {
            path: path.into(),
            line: "Threads:".into(),
        })
}

/// The name of user `uid` in the user database (NSS included), as `newuidmap` looks it up.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: zeroed `passwd` is a valid value to be filled in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives the use of `pw`'s fields.
    let rc =
        unsafe { libc::getpwuid_r(uid, &raw mut pw, buf.as_mut_ptr(), buf.len(), &raw mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// `tool` on `PATH`, or in the system directories (`/usr/bin` and friends).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The map-tool arguments: `PID 0 OWN 1` then each range at 1.., consecutively.
fn helper_args(pid: u32, own: u32, ranges: &[SubIdRange]) -> Vec<String> {
    let mut args = vec![pid.to_string(), "0".into(), own.to_string(), "1".into()];
    let mut next: u64 = 1;
    // The kernel takes at most 340 lines per map; the first is the user's own id.
    for r in ranges.iter().take(339) {
        let count = u64::from(r.count).min(u64::from(u32::MAX) - next);
        if count == 0 {
            break;
        }
        args.extend([next.to_string(), r.first.to_string(), count.to_string()]);
        next += count;
    }
    args
}

/// Starts `sh` waiting for a line on stdin before it execs `tool` with the map of `pid`.
fn spawn_helper(tool: &Path, pid: u32, own: u32, ranges: &[SubIdRange]) -> Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(HELPER_SCRIPT)
        .arg(tool)
        .args(helper_args(pid, own, ranges))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Io {
            what: format!("start {} (through /bin/sh)", tool.display()),
            source,
        })
}

/// Lets the helper run its tool.
fn release(child: &mut Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"go\n");
    }
}

/// Waits for a released helper (at most [`HELPER_TIMEOUT`]); the error says why the map was
/// not written.
fn finish(mut child: Child, tool: &str) -> std::result::Result<(), String> {
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{tool} did not finish in {}s",
                    HELPER_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("{tool}: wait: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    Err(format!("{tool} failed ({status}): {}", err.trim()))
}

/// Stops a helper that must not run its tool: EOF on its stdin makes `read` fail.
fn abort(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

fn write_proc(path: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: format!("write `{}` to {path}", text.trim()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_own_id_to_root_and_ranges_after_it() {
        let ranges = [
            SubIdRange {
                first: 100000,
                count: 65536,
            },
            SubIdRange {
                first: 300000,
                count: 10,
            },
        ];
        assert_eq!(
            helper_args(42, 1000, &ranges).join(" "),
            "42 0 1000 1 1 100000 65536 65537 300000 10"
        );
        assert_eq!(helper_args(42, 1000, &[]).join(" "), "42 0 1000 1");
    }

    #[test]
    fn counts_this_processes_threads() {
        assert!(thread_count().unwrap() >= 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        // This test's thread and the blocked one at least (other tests' threads come and go,
        // so no comparison with an earlier count).
        assert!(thread_count().unwrap() >= 2);
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_threaded_non_root_process_gets_told_what_to_do() {
        let e = Error::MultiThreaded { threads: 3 };
        let msg = e.to_string();
        assert!(msg.contains("3 threads"), "{msg}");
        assert!(msg.contains("before any thread starts"), "{msg}");
        assert!(msg.contains("run as root"), "{msg}");
    }
}
