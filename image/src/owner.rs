//! Who made a temporary thing: a process named by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`), so a pid the kernel has reused for another process does not keep a dead
//! build's leftovers alive. Ingest files of the content store, and the snapshotter's temporary
//! directories, mount points and active snapshots, carry an [`Owner`] in their name or record;
//! the next kiln process removes those whose owner is gone (crash-only state: nothing depends on
//! a clean exit).

use std::fs;
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

    /// The process running as `pid` now, if there is one.
    pub fn of_pid(pid: u32) -> Option<Owner> {
        start_time(pid).map(|start_time| Owner { pid, start_time })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        assert_eq!(Owner::of_pid(me.pid), Some(me));
        let tag = me.tag();
        assert_eq!(Owner::from_tag(&format!("{tag}-7-rm")), Some(me));
        let other = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        // Not `current()`: compare through /proc like any other process.
        assert_ne!(start_time(other.pid), Some(other.start_time));
        assert!(!other.is_alive());
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
}
