//! Who made a temporary thing: a process named by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`), so a pid the kernel has reused for another process does not keep a dead
//! build's leftovers alive. Temporary directories, files, mount points and active snapshots carry
//! an [`Owner`] in their name or record; the next kiln process removes those whose owner is gone
//! (crash-only state: nothing depends on a clean exit).

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

/// A process that owns temporary state: pid plus start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot, from `/proc/PID/stat`.
    pub start_time: u64,
}

impl Owner {
    /// The current process.
    pub fn current() -> Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start_time: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// Whether this process is still running (same pid, same start time).
    pub fn is_alive(self) -> bool {
        if self == Owner::current() {
            return true;
        }
        start_time(self.pid) == Some(self.start_time)
    }

    /// `PID-STARTTIME`, the prefix of the names this owner gives its temporary things.
    pub fn tag(self) -> String {
        format!("{}-{}", self.pid, self.start_time)
    }

    /// Reads the owner back from a name that starts with [`Owner::tag`] (followed by `-` and
    /// anything, or nothing).
    pub fn from_tag(name: &str) -> Option<Owner> {
        let mut parts = name.splitn(3, '-');
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        Some(Owner { pid, start_time })
    }
}

/// Field 22 (`starttime`) of `/proc/PID/stat`; `None` when the process does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Removes the entries of `dir` named `PREFIX<owner tag>-...` whose owner is dead. Directories
/// that are still mount points are unmounted (lazily) first, never recursed into.
/// Returns how many entries were removed.
pub fn remove_orphans(dir: &Path, prefix: &str) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(owner) = Owner::from_tag(rest) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        let path = e.path();
        let _ = crate::mount::unmount_all(&path);
        if crate::fsutil::remove_any(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Unmounts (lazily) and removes the mount points under `dir` named `<owner tag>-...` whose
/// owner is dead. A mount point that is still not empty after unmounting is left alone: this
/// never deletes through a mount. Returns how many were removed.
pub fn unmount_orphans(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(owner) = name.to_str().and_then(Owner::from_tag) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        let path = e.path();
        let _ = crate::mount::unmount_all(&path);
        if fs::remove_dir(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let tag = me.tag();
        assert_eq!(Owner::from_tag(&format!("{tag}-7-rm")), Some(me));
        let other = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        // Not `current()`: compare through /proc like any other process.
        assert_ne!(start_time(other.pid), Some(other.start_time));
        assert!(
            !Owner {
                pid: 999_999_999,
                start_time: 1
            }
            .is_alive()
        );
        assert_eq!(Owner::from_tag("cache"), None);
        assert_eq!(Owner::from_tag("12-x"), None);
    }

    #[test]
    fn removes_only_dead_owners_entries() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join("tmp-999999999-5-1");
        let alive = d.path().join(format!("tmp-{}-0", Owner::current().tag()));
        let other = d.path().join("cache");
        for p in [&dead, &alive, &other] {
            fs::create_dir(p).unwrap();
        }
        fs::write(dead.join("f"), b"x").unwrap();
        assert_eq!(remove_orphans(d.path(), "tmp-"), 1);
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists());
    }
}
