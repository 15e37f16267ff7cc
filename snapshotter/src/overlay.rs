//! The overlayfs driver: a snapshot owns an upper directory (`<id>/fs`) and, while active, a work
//! directory; its parents' upper directories are the lower layers, nearest first. This module
//! builds the mounts and probes whether the kernel lets us mount overlayfs at all.
//!
//! In a user namespace (a rootless build) overlayfs is mounted with `userxattr` (kernel 5.11+)
//! and keeps its opaque markers in `user.overlay.*` instead of the `trusted.overlay.*` only
//! real root may touch; whiteouts stay 0/0 character devices, which unprivileged users may
//! create since 5.8. A state directory records which of the two its snapshots use.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount::{Mount, unmount_all};

/// Options every overlay mount gets: no inode index, and no directory redirects so that renamed
/// directories are copied up whole and the upper dir alone describes the changes.
const BASE_OPTIONS: [&str; 2] = ["index=off", "redirect_dir=off"];

/// The same for `userxattr` mounts, where the kernel refuses `redirect_dir=off` (it means
/// `follow` on kernels built with redirect_always_follow) and `nofollow` neither creates nor
/// follows redirects.
const USERXATTR_OPTIONS: [&str; 3] = ["index=off", "redirect_dir=nofollow", "userxattr"];

/// Whether `name` is overlayfs bookkeeping (of either xattr namespace): never copied into a
/// layer, never applied from one (a layer must not steer overlayfs).
pub(crate) fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// The xattr marking an opaque directory in an upper dir.
pub(crate) fn opaque_xattr(userxattr: bool) -> &'static str {
    if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

fn base_options(userxattr: bool) -> Vec<String> {
    let base: &[&str] = if userxattr {
        &USERXATTR_OPTIONS
    } else {
        &BASE_OPTIONS
    };
    base.iter().map(|s| (*s).to_string()).collect()
}

fn lowerdir(lowers: &[PathBuf]) -> String {
    let parts: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    format!("lowerdir={}", parts.join(":"))
}

fn bind(dir: &Path, read_only: bool) -> Vec<Mount> {
    crate::native::mounts(dir, read_only)
}

/// Mounts of an active snapshot with upper `upper`, work dir `work` and parents `lowers`.
pub(crate) fn active_mounts(
    upper: &Path,
    work: &Path,
    lowers: &[PathBuf],
    userxattr: bool,
) -> Vec<Mount> {
    if lowers.is_empty() {
        return bind(upper, false);
    }
    let mut options = base_options(userxattr);
    options.push(format!("workdir={}", work.display()));
    options.push(format!("upperdir={}", upper.display()));
    options.push(lowerdir(lowers));
    vec![Mount {
        fstype: "overlay".into(),
        source: PathBuf::from("overlay"),
        options,
    }]
}

/// Read-only mounts of the layers `lowers` (nearest first); `empty` is used when there are none.
pub(crate) fn view_mounts(empty: &Path, lowers: &[PathBuf], userxattr: bool) -> Vec<Mount> {
    match lowers {
        [] => bind(empty, true),
        [one] => bind(one, true),
        _ => {
            let mut options = base_options(userxattr);
            options.push("ro".into());
            options.push(lowerdir(lowers));
            vec![Mount {
                fstype: "overlay".into(),
                source: PathBuf::from("overlay"),
                options,
            }]
        }
    }
}

/// Mounts a throw-away overlay under `root` to see whether overlayfs (with our options, and
/// `userxattr` when asked) works here, and removes a lower file through it: the whiteout must
/// be a 0/0 character device in the upper dir.
pub(crate) fn probe(root: &Path, userxattr: bool) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "tmp-{}-probe-",
            crate::owner::Owner::current().tag()
        ))
        .tempdir_in(root)
        .map_err(|e| Error::OverlayUnsupported {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
    let p = dir.path();
    for d in ["l1", "l2", "upper", "work", "merged"] {
        fs::create_dir(p.join(d)).map_err(|e| Error::OverlayUnsupported {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let unsupported = |reason: String| Error::OverlayUnsupported {
        path: root.to_path_buf(),
        reason,
    };
    fs::write(p.join("l2").join("f"), b"").map_err(|e| unsupported(e.to_string()))?;
    let m = active_mounts(
        &p.join("upper"),
        &p.join("work"),
        &[p.join("l1"), p.join("l2")],
        userxattr,
    );
    let merged = p.join("merged");
    crate::mount::mount_all(&m, &merged).map_err(|e| unsupported(e.to_string()))?;
    let removed = fs::remove_file(merged.join("f"));
    let _ = unmount_all(&merged);
    removed.map_err(|e| unsupported(format!("remove a lower file: {e}")))?;
    let wh = fs::symlink_metadata(p.join("upper").join("f"))
        .map_err(|e| unsupported(format!("no whiteout: {e}")))?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !(wh.file_type().is_char_device() && wh.rdev() == 0) {
        return Err(unsupported(
            "whiteouts are not 0/0 character devices".into(),
        ));
    }
    Ok(())
}
