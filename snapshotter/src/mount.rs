//! Mount descriptions handed out by snapshotters, the code that performs them, and
//! [`MountedSnapshot`], a guard that mounts a snapshot on a temporary directory for as long as it
//! lives. Overlay mounts whose option string would exceed the kernel's one-page limit (deep
//! chains) are performed from a thread that has `chdir`ed into the common parent of all layer
//! directories, with the layer paths made relative, as containerd does.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, IoContext, Result};

/// One mount to perform, in the shape of containerd's `mount.Mount` (and of `mount(8)`).
///
/// Snapshotters return a list of these from [`crate::Snapshotter::prepare`] and friends; mount them
/// with [`mount_all`] (or [`MountedSnapshot`]) rather than by hand, because overlay mounts of deep
/// chains need the relative-path trick that `mount_all` performs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    pub fstype: String,
    /// Mount source: `overlay` for overlay mounts, the directory for bind mounts.
    pub source: PathBuf,
    /// Options as `mount(8)` takes them: `ro`, `rbind`, `lowerdir=a:b`, `upperdir=...`.
    pub options: Vec<String>,
}

impl Mount {
    /// Whether the mount is read-only (`ro` in its options).
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// Mounts this one mount on `target` (an existing directory).
    pub fn mount_at(&self, target: &Path) -> Result<()> {
        let read_only = self.is_read_only();
        match self.fstype.as_str() {
            "bind" | "rbind" => {
                let recursive = self.fstype == "rbind" || self.options.iter().any(|o| o == "rbind");
                let mut flags = MountFlags::BIND;
                if recursive {
                    flags |= MountFlags::REC;
                }
                rustix::mount::mount(&self.source, target, "", flags, None)
                    .ctx("bind mount", target)?;
                if read_only {
                    let ro = MountFlags::BIND | MountFlags::RDONLY;
                    if let Err(e) = rustix::mount::mount_remount(target, ro, "") {
                        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                        return Err(e).ctx("remount read-only", target);
                    }
                }
                Ok(())
            }
            "overlay" => {
                let data: Vec<&str> = self
                    .options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| *o != "ro" && *o != "rw")
                    .collect();
                let data = data.join(",");
                let flags = if read_only {
                    MountFlags::RDONLY
                } else {
                    MountFlags::empty()
                };
                // The kernel copies at most one page of mount data.
                if data.len() < page_size() {
                    mount_overlay(target, flags, &data, None)
                } else {
                    let (dir, compact) =
                        compact_overlay_options(&self.options).ok_or_else(|| Error::Io {
                            op: "mount overlay (options too long and no common parent directory)",
                            path: target.to_path_buf(),
                            source: std::io::Error::from_raw_os_error(libc::E2BIG),
                        })?;
                    let target = std::path::absolute(target).ctx("resolve mount target", target)?;
                    mount_overlay(&target, flags, &compact, Some(&dir))
                }
            }
            other => Err(Error::Io {
                op: "mount (unsupported fstype)",
                path: PathBuf::from(other),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            }),
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// Performs the overlay mount, from a thread whose working directory is `chdir` when given (the
/// thread unshares its fs context first, so the process's working directory is untouched).
fn mount_overlay(target: &Path, flags: MountFlags, data: &str, chdir: Option<&Path>) -> Result<()> {
    let cdata = CString::new(data).map_err(|_| Error::Io {
        op: "mount overlay (NUL in options)",
        path: target.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    let Some(dir) = chdir else {
        return rustix::mount::mount("overlay", target, "overlay", flags, cdata.as_c_str())
            .ctx("mount overlay", target);
    };
    let dir = dir.to_path_buf();
    let target = target.to_path_buf();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: CLONE_FS only detaches cwd/root/umask of this short-lived thread; no file
            // descriptor table is unshared.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .ctx("unshare fs context for mount", &dir)?;
            rustix::process::chdir(&dir).ctx("chdir for overlay mount", &dir)?;
            rustix::mount::mount("overlay", &target, "overlay", flags, cdata.as_c_str())
                .ctx("mount overlay (relative lowerdirs)", &target)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Io {
                op: "mount overlay (thread panicked)",
                path: target.clone(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            })
        })
    })
}

/// Rewrites `lowerdir`/`upperdir`/`workdir` relative to their longest common parent directory.
fn compact_overlay_options(options: &[String]) -> Option<(PathBuf, String)> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for o in options {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            paths.extend(v.split(':').map(PathBuf::from));
        } else if let Some(v) = o
            .strip_prefix("upperdir=")
            .or_else(|| o.strip_prefix("workdir="))
        {
            paths.push(PathBuf::from(v));
        }
    }
    let first = paths.first()?.parent()?.to_path_buf();
    let mut common = first;
    while !paths.iter().all(|p| p.starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    if common.as_os_str().is_empty() || common == Path::new("/") {
        return None;
    }
    let rel = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map_or_else(|_| p.to_string(), |r| r.to_string_lossy().into_owned())
    };
    let mut out = Vec::new();
    for o in options {
        if o == "ro" || o == "rw" {
            continue;
        }
        if let Some(v) = o.strip_prefix("lowerdir=") {
            let parts: Vec<String> = v.split(':').map(rel).collect();
            out.push(format!("lowerdir={}", parts.join(":")));
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            out.push(format!("upperdir={}", rel(v)));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            out.push(format!("workdir={}", rel(v)));
        } else {
            out.push(o.clone());
        }
    }
    Some((common, out.join(",")))
}

/// Mounts every mount of `mounts` on `target`, in order (later mounts stack on earlier ones).
/// On failure the mounts already made are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount_at(target) {
            for _ in 0..i {
                let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (lazily, so open files do not block it).
pub fn unmount_all(target: &Path) -> Result<()> {
    let mut first = true;
    loop {
        match rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => first = false,
            Err(rustix::io::Errno::INVAL) if !first => return Ok(()),
            Err(e) => return Err(e).ctx("unmount", target),
        }
    }
}

/// A snapshot's mounts mounted on a fresh temporary directory; unmounted (and the directory
/// removed) on drop.
///
/// ```no_run
/// # fn f(s: &dyn kiln_snapshotter::Snapshotter) -> kiln_snapshotter::Result<()> {
/// let mounts = s.prepare("step-1", Some("base"))?;
/// let m = kiln_snapshotter::MountedSnapshot::new(&mounts)?;
/// std::fs::write(m.path().join("hello"), b"hi").unwrap();
/// drop(m);
/// s.commit("step-1-done", "step-1")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MountedSnapshot {
    dir: Option<tempfile::TempDir>,
}

impl MountedSnapshot {
    /// Mounts `mounts` on a new temporary directory in `$TMPDIR`. A process killed while it
    /// holds one leaves the mount behind: builds use [`MountedSnapshot::new_in`] instead.
    pub fn new(mounts: &[Mount]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-mount-")
            .tempdir()
            .ctx("create mount point", std::env::temp_dir())?;
        mount_all(mounts, dir.path())?;
        Ok(Self { dir: Some(dir) })
    }

    /// Mounts `mounts` on a new directory `<root>/<pid>-<starttime>-<random>` (`root` is
    /// created if needed), normally [`crate::Snapshotter::mount_root`]: if this process dies
    /// without unmounting, the next [`crate::open`] of the state directory unmounts it.
    pub fn new_in(mounts: &[Mount], root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).ctx("create directory", root)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", crate::owner::Owner::current().tag()))
            .tempdir_in(root)
            .ctx("create mount point in", root)?;
        mount_all(mounts, dir.path())?;
        Ok(Self { dir: Some(dir) })
    }

    /// The directory the snapshot is visible at.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Unmounts now, reporting errors that `drop` would swallow.
    pub fn unmount(mut self) -> Result<()> {
        if let Some(dir) = self.dir.take() {
            unmount_all(dir.path())?;
            let path = dir.path().to_path_buf();
            dir.close().ctx("remove mount point", path)?;
        }
        Ok(())
    }
}

impl Drop for MountedSnapshot {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if unmount_all(dir.path()).is_ok() {
                let _ = dir.close();
            } else {
                // Never recurse into a directory that may still be a mount.
                let _ = dir.keep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_common_parent() {
        let opts = vec![
            "index=off".to_string(),
            "workdir=/s/snapshots/3/work".to_string(),
            "upperdir=/s/snapshots/3/fs".to_string(),
            "lowerdir=/s/snapshots/2/fs:/s/snapshots/1/fs".to_string(),
        ];
        let (dir, data) = compact_overlay_options(&opts).unwrap();
        assert_eq!(dir, PathBuf::from("/s/snapshots"));
        assert_eq!(
            data,
            "index=off,workdir=3/work,upperdir=3/fs,lowerdir=2/fs:1/fs"
        );
    }
}
