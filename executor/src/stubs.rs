//! Mount targets inside the container's rootfs, and the mount-point stubs created for targets
//! that did not exist, which are removed again after the run when still empty, restoring the
//! parent directory's timestamps (BuildKit's `MountStubsCleaner`).
//!
//! Paths are resolved by the kernel inside the rootfs ([`kiln_fs::Root`]: symlinks of any chain
//! length and `..` stay inside it), and everything after that is done relative to directory
//! descriptors: stubs are created with `mkdirat`/`openat` under the held parent, mounts go onto
//! the target's own `O_PATH` descriptor (`/proc/self/fd/N`, as runc does since CVE-2021-30465),
//! and removal is `unlinkat` by name under the parent descriptor held since creation, with
//! `futimens` on that same descriptor. A step that swaps a stub's parent for a symlink to a host
//! directory therefore changes nothing outside the rootfs: the held descriptor still names the
//! original (now deleted) directory.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// What kind of stub a mount needs at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// A mount target found or created inside the rootfs: its parent directory, its name there and
/// an `O_PATH` descriptor of the target itself.
#[derive(Debug)]
pub(crate) struct Target {
    parent: OwnedFd,
    name: OsString,
    fd: OwnedFd,
    /// The path inside the rootfs, for messages.
    pub(crate) shown: String,
}

impl Target {
    /// The path to mount onto: the target's descriptor in /proc, so nothing can be swapped.
    pub(crate) fn path(&self) -> PathBuf {
        kiln_fs::proc_fd_path(&self.fd)
    }

    /// After a mount onto [`Target::path`]: an `O_PATH` descriptor of the root of the mount now
    /// at the target (the name looked up again under the held parent), for remounts.
    pub(crate) fn top(&self) -> Result<OwnedFd> {
        reopen(&self.parent, &self.name).map_err(|e| {
            Error::sys(
                "open",
                format!("mount at {}", self.shown),
                std::io::Error::from(e),
            )
        })
    }

    /// What the cleanup needs to unmount the target later.
    pub(crate) fn into_mount_point(self) -> MountPoint {
        MountPoint {
            parent: self.parent,
            name: self.name,
        }
    }
}

/// A RUN mount's place in the rootfs, unmounted after the run by [`MountPoint::unmount`].
#[derive(Debug)]
pub(crate) struct MountPoint {
    parent: OwnedFd,
    name: OsString,
}

impl MountPoint {
    /// Lazily unmounts the mount at this place (found again under the held parent, so a step
    /// that renamed or replaced a parent directory cannot point the unmount elsewhere).
    pub(crate) fn unmount(&self) {
        if let Ok(top) = reopen(&self.parent, &self.name) {
            let _ = crate::sys::umount2(&kiln_fs::proc_fd_path(&top), libc::MNT_DETACH);
        }
    }
}

fn reopen(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// One path this run created in the rootfs: its parent (held open), its name there, and the
/// parent's timestamps from before.
#[derive(Debug)]
struct Stub {
    parent: OwnedFd,
    name: OsString,
    kind: StubKind,
    parent_times: Option<Timestamps>,
    shown: String,
}

/// The stubs created for one run, removed (when still empty) by [`Stubs::clean`].
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    created: Vec<Stub>,
}

impl Stubs {
    /// Resolves `path` inside `root` (symlinks followed inside it) and makes sure it exists as
    /// `kind`, creating missing parents as 0755 directories; every created path is recorded.
    pub(crate) fn ensure(
        &mut self,
        root: &kiln_fs::Root,
        path: &str,
        kind: StubKind,
    ) -> Result<Target> {
        let canonical = root
            .canonical(path, true)
            .map_err(Error::rootfs("mount target"))?;
        let parts: Vec<&str> = canonical.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "mount target `{path}` is the root directory"
            )));
        }
        let fail = |what: &'static str, shown: &str, e: Errno| {
            Error::sys(what, shown.to_owned(), std::io::Error::from(e))
        };
        let mut dir = open_dir(root.as_fd(), OsStr::new(".")).map_err(|e| fail("open", "/", e))?;
        let mut shown = String::new();
        for (i, part) in parts.iter().enumerate() {
            let name = OsStr::new(part);
            shown.push('/');
            shown.push_str(part);
            let last = i + 1 == parts.len();
            let exists = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    // The resolution above left no symlink; one now means a race.
                    return Err(Error::InvalidSpec(format!(
                        "mount target `{path}`: `{shown}` changed while being resolved"
                    )));
                }
                Ok(_) => true,
                Err(Errno::NOENT) => false,
                Err(e) => return Err(fail("stat mount target", &shown, e)),
            };
            if !exists {
                let parent_times = times_of(&dir);
                let stub_kind = if last { kind } else { StubKind::Dir };
                match stub_kind {
                    StubKind::File => {
                        rustix::fs::openat(
                            &dir,
                            name,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o644),
                        )
                        .map_err(|e| fail("create mount stub", &shown, e))?;
                    }
                    StubKind::Dir => rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
                        .map_err(|e| fail("create mount stub", &shown, e))?,
                }
                let parent =
                    rustix::io::fcntl_dupfd_cloexec(&dir, 0).map_err(|e| fail("dup", &shown, e))?;
                self.created.push(Stub {
                    parent,
                    name: name.to_owned(),
                    kind: stub_kind,
                    parent_times,
                    shown: shown.clone(),
                });
            }
            if last {
                let fd = reopen(&dir, name).map_err(|e| fail("open mount target", &shown, e))?;
                return Ok(Target {
                    parent: dir,
                    name: name.to_owned(),
                    fd,
                    shown,
                });
            }
            dir = open_dir(&dir, name).map_err(|e| match e {
                Errno::NOTDIR | Errno::LOOP => Error::InvalidSpec(format!(
                    "mount target `{path}`: `{shown}` is not a directory"
                )),
                e => fail("open", &shown, e),
            })?;
        }
        unreachable!("the loop returns at the last component")
    }

    /// Removes the recorded stubs, newest first, that are still empty (a file stub still an
    /// empty regular file, a directory stub still an empty directory), each by name under the
    /// parent held since its creation, and puts that parent's timestamps back. Returns the
    /// first error other than "not empty"/"gone"/"replaced".
    pub(crate) fn clean(self) -> Result<()> {
        let mut first_err = None;
        for stub in self.created.into_iter().rev() {
            let removed = match stub.kind {
                StubKind::Dir => rustix::fs::unlinkat(&stub.parent, &stub.name, AtFlags::REMOVEDIR),
                StubKind::File => {
                    match rustix::fs::statat(&stub.parent, &stub.name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st)
                            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                                && st.st_size == 0 =>
                        {
                            rustix::fs::unlinkat(&stub.parent, &stub.name, AtFlags::empty())
                        }
                        Ok(_) => continue,
                        Err(e) => Err(e),
                    }
                }
            };
            match removed {
                Ok(()) => {
                    if let Some(times) = &stub.parent_times {
                        let _ = rustix::fs::futimens(&stub.parent, times);
                    }
                }
                Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {}
                Err(e) => {
                    first_err.get_or_insert(Error::sys(
                        "remove mount stub",
                        stub.shown.clone(),
                        std::io::Error::from(e),
                    ));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A directory under `dir` opened for reading (a real descriptor, so `futimens` works on it),
/// never through a symlink.
fn open_dir(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn times_of(dir: &OwnedFd) -> Option<Timestamps> {
    let st = rustix::fs::fstat(dir).ok()?;
    Some(Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn set_old_times(path: &std::path::Path) -> std::time::SystemTime {
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::open(path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();
        old
    }

    #[test]
    fn stubs_are_removed_only_when_empty_and_parent_times_restored() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path();
        fs::create_dir(root_path.join("etc")).unwrap();
        let old = set_old_times(&root_path.join("etc"));
        set_old_times(root_path);
        let root = kiln_fs::Root::open(root_path).unwrap();
        let mut stubs = Stubs::default();
        stubs.ensure(&root, "/etc/hosts", StubKind::File).unwrap();
        stubs
            .ensure(&root, "/run/secrets/a", StubKind::File)
            .unwrap();
        stubs.ensure(&root, "/keep/dir", StubKind::Dir).unwrap();
        fs::write(root_path.join("keep/dir/data"), b"x").unwrap();
        stubs.clean().unwrap();
        assert!(!root_path.join("etc/hosts").exists());
        assert!(!root_path.join("run").exists());
        assert!(root_path.join("keep/dir/data").exists());
        assert_eq!(
            fs::metadata(root_path.join("etc"))
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
    }

    #[test]
    fn targets_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        fs::create_dir(&root_path).unwrap();
        symlink(outside.path(), root_path.join("escape")).unwrap();
        symlink("../../../../x", root_path.join("up")).unwrap();
        let root = kiln_fs::Root::open(&root_path).unwrap();
        let mut stubs = Stubs::default();
        let t = stubs.ensure(&root, "/escape/t", StubKind::Dir).unwrap();
        assert_eq!(t.shown, format!("{}/t", outside.path().display()));
        assert!(
            root_path
                .join(outside.path().strip_prefix("/").unwrap())
                .join("t")
                .is_dir()
        );
        stubs.ensure(&root, "/up/y", StubKind::File).unwrap();
        assert!(root_path.join("x/y").is_file());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(stubs.ensure(&root, "/", StubKind::Dir).is_err());
    }

    #[test]
    fn cleanup_under_a_swapped_parent_touches_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let bait = tempfile::tempdir().unwrap();
        fs::write(bait.path().join("t"), b"").unwrap();
        fs::create_dir(bait.path().join("d")).unwrap();
        let bait_mtime = set_old_times(bait.path());
        let root_path = dir.path();
        let root = kiln_fs::Root::open(root_path).unwrap();
        let mut stubs = Stubs::default();
        stubs.ensure(&root, "/p/t", StubKind::File).unwrap();
        stubs.ensure(&root, "/p/d", StubKind::Dir).unwrap();
        // The step replaces the stubs' parent with a link to the host directory.
        fs::remove_dir_all(root_path.join("p")).unwrap();
        symlink(bait.path(), root_path.join("p")).unwrap();
        stubs.clean().unwrap();
        assert!(bait.path().join("t").is_file());
        assert!(bait.path().join("d").is_dir());
        let meta = fs::metadata(bait.path()).unwrap();
        assert_eq!(meta.modified().unwrap(), bait_mtime);
        assert_eq!(meta.nlink(), 3);
    }
}
