//! The mounts of one step inside the rootfs: binds (host paths, caches, contexts; writable ones
//! over a throw-away overlay or copy), tmpfs, and files written on the scratch tmpfs (secrets,
//! /etc files), each at a target resolved inside the rootfs (missing ones created as stubs)
//! and made nodev; those under /dev wait for PID 1's fresh /dev.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::copy::copy_tree;
use crate::error::{Error, Result};
use crate::proto::PlannedMount;
use crate::stubs::{MountPoint, StubKind, Stubs, Target};
use crate::sys;

/// What the init mounted and created on the rootfs, undone after the run.
#[derive(Default)]
pub(crate) struct Mounted {
    pub(crate) stubs: Stubs,
    pub(crate) mounts: Vec<MountPoint>,
}

pub(crate) fn apply_mount(
    root: &kiln_fs::Root,
    scratch: &Path,
    index: usize,
    mount: &PlannedMount,
    state: &mut Mounted,
) -> Result<()> {
    let target = match mount {
        PlannedMount::Bind {
            source,
            readonly,
            discard_writes,
            ..
        } => {
            // The solver resolved the source; a symlink here means its resolution stopped
            // short, and following it could bind anything on the host. What is checked is what
            // gets bound: the mount is made from the descriptor.
            let source_fd = rustix::fs::open(
                source,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::io("open bind source", source, e.into()))?;
            let st = rustix::fs::fstat(&source_fd)
                .map_err(|e| Error::io("stat bind source", source, e.into()))?;
            let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if file_type == rustix::fs::FileType::Symlink {
                return Err(Error::InvalidSpec(format!(
                    "bind source `{}` is a symbolic link",
                    source.display()
                )));
            }
            let is_dir = file_type == rustix::fs::FileType::Directory;
            let kind = if is_dir {
                StubKind::Dir
            } else {
                StubKind::File
            };
            let target = state.stubs.ensure(root, mount.target(), kind)?;
            let source_path = kiln_fs::proc_fd_path(&source_fd);
            if *discard_writes {
                let work = scratch.join(format!("bind-{index}"));
                fs::create_dir(&work).map_err(|e| Error::io("create scratch", &work, e))?;
                let overlaid = is_dir && overlay_bind(source, &work, &target).is_ok();
                if !overlaid {
                    let copy = work.join("copy");
                    copy_tree(source, &copy)?;
                    bind_onto(&copy, &target, false)?;
                }
            } else {
                bind_onto(&source_path, &target, *readonly)?;
            }
            target
        }
        PlannedMount::Tmpfs { size, .. } => {
            let target = state.stubs.ensure(root, mount.target(), StubKind::Dir)?;
            let data = size.map(|s| format!("size={s}"));
            sys::mount(
                Some(OsStr::new("tmpfs")),
                &target.path(),
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_deref(),
            )
            .map_err(|e| Error::sys("mount", format!("tmpfs on {}", mount.target()), e))?;
            target
        }
        PlannedMount::File {
            contents,
            mode,
            uid,
            gid,
            ..
        } => {
            let file = scratch.join(format!("file-{index}"));
            fs::write(&file, contents).map_err(|e| Error::io("write mount file", &file, e))?;
            std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                .map_err(|e| Error::io("chown mount file", &file, e))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(*mode & 0o7777))
                .map_err(|e| Error::io("chmod mount file", &file, e))?;
            let target = state.stubs.ensure(root, mount.target(), StubKind::File)?;
            bind_onto(&file, &target, true)?;
            target
        }
    };
    // Every mount of a step (binds of host or stage directories, caches, tmpfs, secrets) is
    // nodev, submounts included.
    let top = target.top()?;
    sys::set_nodev_recursive(&kiln_fs::proc_fd_path(&top))
        .map_err(|e| Error::sys("mount_setattr", format!("nodev {}", mount.target()), e))?;
    state.mounts.push(target.into_mount_point());
    Ok(())
}

/// A recursive bind of the host path `source` onto `target` (its descriptor), remounted
/// read-only when asked.
fn bind_onto(source: &Path, target: &Target, readonly: bool) -> Result<()> {
    sys::mount(
        Some(source.as_os_str()),
        &target.path(),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| {
        Error::sys(
            "mount",
            format!("bind {} on {}", source.display(), target.shown),
            e,
        )
    })?;
    if readonly {
        let top = target.top()?;
        remount_readonly(&kiln_fs::proc_fd_path(&top))
            .map_err(|e| Error::sys("mount", format!("remount {} read-only", target.shown), e))?;
    }
    Ok(())
}

/// A bind remount read-only of the mount at `path`, repeating its own flags, without which the
/// remount would drop them (or fail).
fn remount_readonly(path: &Path) -> std::io::Result<()> {
    let keep = sys::locked_mount_flags(path).unwrap_or(0);
    sys::mount(
        None,
        path,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep,
        None,
    )
}

/// A recursive bind of `source` on `target`, both host paths the caller trusts (PID 1's own
/// /proc and /sys paths), remounted read-only when asked.
pub(crate) fn bind_at(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    sys::mount(
        Some(source.as_os_str()),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| {
        Error::sys(
            "mount",
            format!("bind {} on {}", source.display(), target.display()),
            e,
        )
    })?;
    if readonly {
        remount_readonly(target).map_err(|e| {
            Error::sys(
                "mount",
                format!("remount {} read-only", target.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// A writable view of `source` whose writes go to an upper dir on the scratch tmpfs.
fn overlay_bind(source: &Path, work: &Path, target: &Target) -> Result<()> {
    let upper = work.join("upper");
    let workdir = work.join("work");
    for d in [&upper, &workdir] {
        fs::create_dir(d).map_err(|e| Error::io("create scratch", d, e))?;
    }
    let escape = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(':', "\\:")
            .replace(',', "\\,")
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        escape(source),
        escape(&upper),
        escape(&workdir)
    );
    sys::mount(
        Some(OsStr::new("overlay")),
        &target.path(),
        Some("overlay"),
        libc::MS_NODEV,
        Some(&data),
    )
    .map_err(|e| Error::sys("mount", format!("overlay over {}", source.display()), e))
}

/// Whether a mount goes inside the container's fresh /dev tmpfs, so PID 1 mounts it after
/// creating /dev (BuildKit puts heredoc scripts at /dev/pipes/NAME). Nothing it creates there
/// outlives the container, so it needs no stub cleanup.
pub(crate) fn under_dev(target: &str) -> bool {
    Path::new(target)
        .strip_prefix("/dev")
        .is_ok_and(|rest| rest.components().next().is_some())
}

/// The mounts PID 1 applies after /dev exists.
pub(crate) struct DevMounts<'a> {
    pub(crate) scratch: &'a Path,
    pub(crate) mounts: &'a [PlannedMount],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_below_dev_are_late_mounts() {
        assert!(under_dev("/dev/pipes/x"));
        assert!(!under_dev("/dev"));
        assert!(!under_dev("/devices/x"));
        assert!(!under_dev("/etc/hosts"));
    }
}
