//! Persistent `RUN --mount=type=cache` directories under `<state_dir>/mounts/cache/`, and their
//! `sharing` modes enforced with `flock(2)` so they hold across threads and across kiln
//! processes sharing one state dir:
//!
//! - `shared`: a shared lock on `<id>.lock` (only excludes `locked` users);
//! - `locked`: an exclusive lock on `<id>.lock`, waited for;
//! - `private`: the first instance (`<id>`, `<id>.private-1`, ...) whose exclusive lock is free.
//!
//! A missing directory is created under `<instance>.init.lock` in a temporary name (seeded from
//! `from`, then chowned and chmodded) and renamed into place, so a crash never leaves a
//! half-seeded cache. No symlink is ever followed: a seed that is one is refused (the solver
//! resolves `from=`/`source=` inside the stage), and a cache path that is not a real directory
//! is replaced, so a cache can never stand for a host directory.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::copy::copy_tree;
use crate::error::{Error, Result};
use crate::spec::{CacheMount, CacheSharing, CancelToken};
use crate::sys;

/// A cache directory held for one run; the lock is released when this is dropped.
#[derive(Debug)]
pub(crate) struct CacheLease {
    _lock: File,
    pub(crate) dir: PathBuf,
}

/// `<state_dir>/mounts/cache`: where `RUN --mount=type=cache` directories live. In it, the
/// directory of cache id `ID` is [`cache_dir_name`]`(ID)`, locked through `NAME.lock` (shared
/// users) and created under `NAME.init.lock`.
pub fn cache_mounts_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("mounts").join("cache")
}

/// The file-name-safe form of a cache id (its directory name in [`cache_mounts_dir`]):
/// `[A-Za-z0-9_-]` kept, every other byte `%XX`, `%00` for an empty id.
pub fn cache_dir_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Takes the cache directory for `mount`, waiting for (or, with `private`, stepping around)
/// other users as its sharing mode says.
pub(crate) fn acquire(
    state_dir: &Path,
    mount: &CacheMount,
    cancel: &CancelToken,
) -> Result<CacheLease> {
    let base = cache_mounts_dir(state_dir);
    fs::create_dir_all(&base).map_err(|e| Error::io("create cache directory", &base, e))?;
    let name = cache_dir_name(&mount.id);
    match mount.sharing {
        CacheSharing::Shared | CacheSharing::Locked => {
            let lock = open_lock(&base.join(format!("{name}.lock")))?;
            wait_lock(&lock, mount.sharing == CacheSharing::Locked, cancel)?;
            let dir = ensure_created(&base, &name, mount, cancel)?;
            Ok(CacheLease { _lock: lock, dir })
        }
        CacheSharing::Private => {
            for n in 0u32.. {
                let instance = if n == 0 {
                    name.clone()
                } else {
                    format!("{name}.private-{n}")
                };
                let lock = open_lock(&base.join(format!("{instance}.lock")))?;
                let path = base.join(format!("{instance}.lock"));
                if sys::flock(lock.as_fd(), true, true)
                    .map_err(|e| Error::io("lock cache", &path, e))?
                {
                    let dir = ensure_created(&base, &instance, mount, cancel)?;
                    return Ok(CacheLease { _lock: lock, dir });
                }
            }
            Err(Error::InvalidSpec(format!(
                "no free private instance of cache `{}`",
                mount.id
            )))
        }
    }
}

fn open_lock(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open cache lock", path, e))
}

fn wait_lock(lock: &File, exclusive: bool, cancel: &CancelToken) -> Result<()> {
    loop {
        if sys::flock(lock.as_fd(), exclusive, true)
            .map_err(|e| Error::sys("flock", "cache lock", e))?
        {
            return Ok(());
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ensure_created(
    base: &Path,
    instance: &str,
    mount: &CacheMount,
    cancel: &CancelToken,
) -> Result<PathBuf> {
    let dir = base.join(instance);
    let is_real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if is_real_dir(&dir) {
        return Ok(dir);
    }
    let init = open_lock(&base.join(format!("{instance}.init.lock")))?;
    wait_lock(&init, true, cancel)?;
    if is_real_dir(&dir) {
        return Ok(dir);
    }
    // A symlink or file in its place (left by an older kiln) goes.
    if fs::symlink_metadata(&dir).is_ok() {
        fs::remove_file(&dir).map_err(|e| Error::io("remove cache", &dir, e))?;
    }
    // Holding the init lock, every `<instance>.tmp-*` is a leftover of a crashed creator.
    let prefix = format!("{instance}.tmp-");
    if let Ok(entries) = fs::read_dir(base) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let stale = entry.path();
                fs::remove_dir_all(&stale)
                    .map_err(|e| Error::io("remove stale cache", &stale, e))?;
            }
        }
    }
    let tmp = base.join(format!("{prefix}{}", std::process::id()));
    match &mount.seed {
        Some(seed) => {
            let meta =
                fs::symlink_metadata(seed).map_err(|e| Error::io("stat cache seed", seed, e))?;
            if !meta.is_dir() {
                return Err(Error::InvalidSpec(format!(
                    "cache mount `{}`: from source `{}` is not a directory",
                    mount.target,
                    seed.display()
                )));
            }
            copy_tree(seed, &tmp)?;
        }
        None => fs::create_dir(&tmp).map_err(|e| Error::io("create cache", &tmp, e))?,
    }
    // `tmp` is a directory this function made; lchown and a mode change on it follow nothing.
    std::os::unix::fs::lchown(&tmp, Some(mount.uid), Some(mount.gid))
        .map_err(|e| Error::io("chown cache", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mount.mode & 0o7777))
        .map_err(|e| Error::io("chmod cache", &tmp, e))?;
    fs::rename(&tmp, &dir).map_err(|e| Error::io("rename cache", &dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_escape_to_flat_names() {
        assert_eq!(cache_dir_name("/root/.cache"), "%2Froot%2F%2Ecache");
        assert_eq!(cache_dir_name("go-build_1"), "go-build_1");
        assert_eq!(cache_dir_name(""), "%00");
    }

    #[test]
    fn private_steps_around_a_busy_instance_and_seeds() {
        let state = tempfile::tempdir().unwrap();
        let seed = tempfile::tempdir().unwrap();
        fs::write(seed.path().join("s"), b"seed").unwrap();
        let m = CacheMount {
            id: "p".into(),
            target: "/c".into(),
            sharing: CacheSharing::Private,
            seed: Some(seed.path().to_path_buf()),
            mode: 0o700,
            ..CacheMount::default()
        };
        let cancel = CancelToken::new();
        let a = acquire(state.path(), &m, &cancel).unwrap();
        let b = acquire(state.path(), &m, &cancel).unwrap();
        assert_ne!(a.dir, b.dir);
        assert_eq!(fs::read(b.dir.join("s")).unwrap(), b"seed");
        let mode = fs::metadata(&a.dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        drop(a);
        let c = acquire(state.path(), &m, &cancel).unwrap();
        assert_eq!(c.dir, state.path().join("mounts/cache/p"));
    }

    #[test]
    fn locked_waits_and_can_be_cancelled() {
        let state = tempfile::tempdir().unwrap();
        let m = CacheMount {
            id: "l".into(),
            sharing: CacheSharing::Locked,
            ..CacheMount::default()
        };
        let cancel = CancelToken::new();
        let held = acquire(state.path(), &m, &cancel).unwrap();
        let other = CancelToken::new();
        other.cancel();
        assert!(matches!(
            acquire(state.path(), &m, &other),
            Err(Error::Cancelled)
        ));
        let shared = CacheMount {
            sharing: CacheSharing::Shared,
            ..m.clone()
        };
        assert!(matches!(
            acquire(state.path(), &shared, &other),
            Err(Error::Cancelled)
        ));
        drop(held);
        acquire(state.path(), &shared, &cancel).unwrap();
    }
}
