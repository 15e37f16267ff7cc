//! Who made a temporary thing: a process named by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`), so a pid the kernel has reused for another process does not keep a dead
//! build's leftovers alive. Temporary directories, files, mount points and active snapshots carry
//! an [`Owner`] in their name or record; the next kiln process removes those whose owner is gone
//! (crash-only state: nothing depends on a clean exit).

use std::fs;
use std::path::Path;

pub use kiln_image::Owner;

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
