//! Paths inside the container's rootfs: resolving a container path on the host without letting
//! symlinks escape the root (like containerd's `fs.RootPath`), and the mount-point stubs created
//! for mounts whose target did not exist, which are removed again after the run when still
//! empty, restoring the parent directory's timestamps (BuildKit's `MountStubsCleaner`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Resolves the container path `path` to a host path under `root`, following symlinks as if
/// `root` were `/`. The result may not exist.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(Path::new(path));
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::InvalidSpec(format!(
                        "too many levels of symbolic links resolving `{path}` in the rootfs"
                    )));
                }
                let target = fs::read_link(&candidate)
                    .map_err(|e| Error::io("read symlink", &candidate, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut rest = components(&target);
                rest.extend(pending);
                pending = rest;
            }
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// What kind of stub a mount needs at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// One path this run created in the rootfs, with its parent's timestamps from before.
#[derive(Debug)]
struct Stub {
    path: PathBuf,
    kind: StubKind,
    parent_times: Option<(std::time::SystemTime, std::time::SystemTime)>,
}

/// The stubs created for one run, removed (when still empty) by [`Stubs::clean`].
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    created: Vec<Stub>,
}

impl Stubs {
    /// Makes sure `host_path` (already resolved under `root`) exists as `kind`, creating
    /// missing parents as 0755 directories; every created path is recorded.
    pub(crate) fn ensure(&mut self, root: &Path, host_path: &Path, kind: StubKind) -> Result<()> {
        let rel = host_path.strip_prefix(root).unwrap_or(host_path);
        let mut current = root.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            current.push(part);
            let last = i + 1 == parts.len();
            match fs::symlink_metadata(&current) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat mount target", &current, e)),
            }
            let parent_times = current.parent().and_then(times_of);
            if last && kind == StubKind::File {
                File::options()
                    .write(true)
                    .create_new(true)
                    .open(&current)
                    .map_err(|e| Error::io("create mount stub", &current, e))?;
            } else {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .map_err(|e| Error::io("create mount stub", &current, e))?;
            }
            self.created.push(Stub {
                path: current.clone(),
                kind: if last { kind } else { StubKind::Dir },
                parent_times,
            });
        }
        Ok(())
    }

    /// Removes the recorded stubs, newest first, that are still empty, and puts their parents'
    /// timestamps back. Returns the first error other than "not empty"/"gone".
    pub(crate) fn clean(self) -> Result<()> {
        let mut first_err = None;
        for stub in self.created.into_iter().rev() {
            let removed = match stub.kind {
                StubKind::Dir => fs::remove_dir(&stub.path),
                StubKind::File => match fs::symlink_metadata(&stub.path) {
                    Ok(m) if m.is_file() && m.len() == 0 => fs::remove_file(&stub.path),
                    Ok(_) => continue,
                    Err(e) => Err(e),
                },
            };
            match removed {
                Ok(()) => {
                    if let (Some(times), Some(parent)) = (stub.parent_times, stub.path.parent()) {
                        let _ = set_times(parent, times);
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                Err(e) => {
                    first_err.get_or_insert(Error::io("remove mount stub", &stub.path, e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn times_of(path: &Path) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.accessed().ok()?, meta.modified().ok()?))
}

fn set_times(
    path: &Path,
    (atime, mtime): (std::time::SystemTime, std::time::SystemTime),
) -> io::Result<()> {
    File::open(path)?.set_times(FileTimes::new().set_accessed(atime).set_modified(mtime))
}

/// Creates `host_path` (under `root`) and its missing parents as 0755 directories owned by
/// `uid:gid` (BuildKit's `MkdirAllAndChown` of the working directory). Kept in the layer.
pub(crate) fn mkdir_all_owned(root: &Path, host_path: &Path, uid: u32, gid: u32) -> Result<()> {
    let rel = host_path.strip_prefix(root).unwrap_or(host_path);
    let mut current = root.to_path_buf();
    for part in rel.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(Error::InvalidSpec(format!(
                    "working directory component `{}` is not a directory",
                    current.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat working directory", &current, e)),
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&current)
            .map_err(|e| Error::io("create working directory", &current, e))?;
        std::os::unix::fs::lchown(&current, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown working directory", &current, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/etc")).unwrap();
        std::os::unix::fs::symlink("/real/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("real/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/etc/hosts").unwrap(),
            root.join("real/etc/hosts")
        );
        assert_eq!(
            resolve_in_root(root, "/real/escape/x").unwrap(),
            root.join("outside/x")
        );
        assert_eq!(resolve_in_root(root, "../../a").unwrap(), root.join("a"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/loop", dir.path().join("loop")).unwrap();
        assert!(resolve_in_root(dir.path(), "/loop/x").is_err());
    }

    #[test]
    fn stubs_are_removed_only_when_empty_and_parent_times_restored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        set_times(&root.join("etc"), (old, old)).unwrap();
        set_times(root, (old, old)).unwrap();
        let mut stubs = Stubs::default();
        stubs
            .ensure(root, &root.join("etc/hosts"), StubKind::File)
            .unwrap();
        stubs
            .ensure(root, &root.join("run/secrets/a"), StubKind::File)
            .unwrap();
        stubs
            .ensure(root, &root.join("keep/dir"), StubKind::Dir)
            .unwrap();
        fs::write(root.join("keep/dir/data"), b"x").unwrap();
        stubs.clean().unwrap();
        assert!(!root.join("etc/hosts").exists());
        assert!(!root.join("run").exists());
        assert!(root.join("keep/dir/data").exists());
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().modified().unwrap(),
            old
        );
    }
}
