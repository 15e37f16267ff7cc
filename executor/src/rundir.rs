//! Run directories under `<state>/executor/`: removing one after its run, and those that
//! kiln processes killed mid-run left behind.

use std::fs;
use std::path::Path;

use crate::sys;

/// Removes run directories left by kiln processes that died mid-run (`run-<pid>-...` whose pid
/// is gone). Their mounts died with their namespaces; only empty directories, the OCI bundle,
/// proxy sockets and slirp4netns's log can remain, and nothing else is deleted.
pub(crate) fn reap_stale_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        // The bind of a run in a chroot (EINVAL when there is none).
        let _ = sys::umount2(&dir, libc::MNT_DETACH);
        let _ = fs::remove_file(dir.join("bundle").join("config.json"));
        let _ = fs::remove_file(dir.join("slirp4netns.log"));
        for sub in ["bundle", "oci-state", "rootfs", "scratch", "host"] {
            let _ = fs::remove_dir(dir.join(sub));
        }
        if let Ok(files) = fs::read_dir(&dir) {
            for file in files.flatten() {
                if file
                    .file_type()
                    .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
                {
                    let _ = fs::remove_file(file.path());
                }
            }
        }
        if let Err(e) = fs::remove_dir(&dir) {
            tracing::warn!("leaving stale run directory `{}`: {e}", dir.display());
        }
    }
}

pub(crate) fn remove_run_dir(dir: &Path) {
    // slirp4netns's API socket (published ports), if it was killed before removing it, and
    // its log.
    let _ = fs::remove_file(dir.join("slirp4netns.sock"));
    let _ = fs::remove_file(dir.join("slirp4netns.log"));
    // Only empty directories: if a mount were somehow still alive, never delete through it.
    match fs::remove_dir(dir.join("host")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!("leaving run directory `{}`: {e}", dir.display());
            return;
        }
    }
    for d in [dir.join("rootfs"), dir.join("scratch"), dir.to_path_buf()] {
        if let Err(e) = fs::remove_dir(&d) {
            tracing::warn!("leaving run directory `{}`: {e}", d.display());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_run_dirs_of_dead_processes_are_reaped_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("run-999999999-0-ab");
        let alive = dir.path().join(format!("run-{}-0-cd", std::process::id()));
        let busy = dir.path().join("run-999999998-1-ef");
        for d in [&dead, &alive, &busy] {
            fs::create_dir_all(d.join("rootfs")).unwrap();
            fs::create_dir_all(d.join("scratch")).unwrap();
        }
        fs::create_dir_all(dead.join("bundle")).unwrap();
        fs::write(dead.join("bundle/config.json"), "{}").unwrap();
        // A RUN with a private network killed mid-run leaves slirp4netns's log.
        fs::write(dead.join("slirp4netns.log"), "sent tapfd=5 for tap0\n").unwrap();
        fs::write(busy.join("rootfs/data"), "not ours to delete").unwrap();
        reap_stale_runs(dir.path());
        assert!(!dead.exists());
        assert!(alive.join("rootfs").exists());
        assert!(busy.join("rootfs/data").exists());
    }
}
