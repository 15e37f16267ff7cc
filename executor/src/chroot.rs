//! Running where `/` is not a mount point (kiln itself inside a plain `chroot`, as some CI
//! systems build). The init makes its mount namespace private so nothing it mounts shows on the
//! host, which `mount(/, MS_PRIVATE)` cannot do there (EINVAL: `/` is not a mount), and PID 1's
//! `pivot_root` needs the current root to be a mount too.
//!
//! So, when [`root_is_mount_point`] says no:
//! - the parent binds the run directory onto itself in its own namespace ([`RunDirBind`],
//!   removed after the run), giving the init a mount point it can make private without
//!   touching anything else: propagation is decided by the mount one mounts on;
//! - the init makes that copy private, binds `/` recursively under it (`<run>/host`, which does
//!   not propagate), makes the bind private and `chroot`s into it ([`enter_private_root`]).
//!   From then on `/` is a private mount holding the same tree, and the init goes on exactly
//!   as anywhere else.

use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};

use crate::error::{Error, Result};
use crate::sys;

/// Whether `/` of this process is the root of a mount (`false` in a chroot into a plain
/// directory). Kernels before 5.8 do not say: assumed yes, as before.
pub(crate) fn root_is_mount_point() -> bool {
    match rustix::fs::statx(CWD, "/", AtFlags::empty(), StatxFlags::BASIC_STATS) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        _ => true,
    }
}

/// The run directory bound onto itself in the parent's namespace, unmounted on drop.
#[derive(Debug)]
pub(crate) struct RunDirBind(PathBuf);

impl RunDirBind {
    /// Binds `run_dir` onto itself.
    pub(crate) fn new(run_dir: &Path) -> Result<RunDirBind> {
        sys::mount(
            Some(run_dir.as_os_str()),
            run_dir,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|e| {
            Error::sys(
                "mount",
                format!(
                    "bind {} onto itself (`/` is not a mount point, as in a chroot)",
                    run_dir.display()
                ),
                e,
            )
        })?;
        Ok(RunDirBind(run_dir.to_path_buf()))
    }
}

impl Drop for RunDirBind {
    fn drop(&mut self) {
        if let Err(e) = sys::umount2(&self.0, libc::MNT_DETACH) {
            tracing::warn!("unmounting run directory `{}`: {e}", self.0.display());
        }
    }
}

/// In the init's fresh mount namespace: makes `/` a private mount holding the same tree (see
/// the module docs). `run_dir` is a mount point here (the parent's [`RunDirBind`]).
pub(crate) fn enter_private_root(run_dir: &Path) -> Result<()> {
    let private = |path: &Path, what: &str| {
        sys::mount(None, path, None, libc::MS_REC | libc::MS_PRIVATE, None)
            .map_err(|e| Error::sys("mount", format!("make {what} rprivate"), e))
    };
    private(run_dir, "the run directory")?;
    let host = run_dir.join("host");
    fs::create_dir(&host).map_err(|e| Error::io("create directory", &host, e))?;
    sys::mount(
        Some(Path::new("/").as_os_str()),
        &host,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| Error::sys("mount", format!("bind / on {}", host.display()), e))?;
    private(&host, "the bind of /")?;
    rustix::process::chroot(&host)
        .map_err(|e| Error::sys("chroot", host.display().to_string(), e.into()))?;
    std::env::set_current_dir("/").map_err(|e| Error::io("chdir", "/", e))?;
    Ok(())
}
