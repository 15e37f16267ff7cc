//! The overlayfs driver: a snapshot owns an upper directory (`<id>/fs`) and, while active, a work
//! directory; its parents' upper directories are the lower layers, nearest first. This module
//! builds the mounts and probes whether the kernel lets us mount overlayfs at all.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount::{Mount, unmount_all};

/// Options every overlay mount gets: no inode index, and no directory redirects so that renamed
/// directories are copied up whole and the upper dir alone describes the changes.
const BASE_OPTIONS: [&str; 2] = ["index=off", "redirect_dir=off"];

fn lowerdir(lowers: &[PathBuf]) -> String {
    let parts: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    format!("lowerdir={}", parts.join(":"))
}

fn bind(dir: &Path, read_only: bool) -> Vec<Mount> {
    crate::native::mounts(dir, read_only)
}

/// Mounts of an active snapshot with upper `upper`, work dir `work` and parents `lowers`.
pub(crate) fn active_mounts(upper: &Path, work: &Path, lowers: &[PathBuf]) -> Vec<Mount> {
    if lowers.is_empty() {
        return bind(upper, false);
    }
    let mut options: Vec<String> = BASE_OPTIONS.iter().map(|s| (*s).to_string()).collect();
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
pub(crate) fn view_mounts(empty: &Path, lowers: &[PathBuf]) -> Vec<Mount> {
    match lowers {
        [] => bind(empty, true),
        [one] => bind(one, true),
        _ => {
            let mut options: Vec<String> = BASE_OPTIONS.iter().map(|s| (*s).to_string()).collect();
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

/// Mounts a throw-away overlay under `root` to see whether overlayfs (with our options and
/// trusted xattrs for whiteouts) works here.
pub(crate) fn probe(root: &Path) -> Result<()> {
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
    let m = active_mounts(
        &p.join("upper"),
        &p.join("work"),
        &[p.join("l1"), p.join("l2")],
    );
    let merged = p.join("merged");
    crate::mount::mount_all(&m, &merged).map_err(|e| Error::OverlayUnsupported {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    let _ = unmount_all(&merged);
    Ok(())
}
