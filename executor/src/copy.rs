//! A plain recursive copy that keeps modes, owners and symlinks: seeds new cache mounts from
//! their `from` source and backs `rw` bind mounts whose source overlayfs cannot stack on.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use crate::error::{Error, Result};

/// Copies `src` (a file, directory or symlink) to `dst`, which must not exist, recursively.
/// Sockets, fifos and devices are skipped.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::io("stat copy source", src, e))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| Error::io("read symlink", src, e))?;
        symlink(&target, dst).map_err(|e| Error::io("create symlink", dst, e))?;
    } else if ft.is_dir() {
        fs::create_dir(dst).map_err(|e| Error::io("create directory", dst, e))?;
        let entries = fs::read_dir(src).map_err(|e| Error::io("read directory", src, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", src, e))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(|e| Error::io("copy file", src, e))?;
    } else {
        return Ok(());
    }
    match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
        // Not root: keep our own ownership rather than failing the copy.
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(Error::io("chown", dst, e)),
    }
    if !ft.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", dst, e))?;
    }
    Ok(())
}
