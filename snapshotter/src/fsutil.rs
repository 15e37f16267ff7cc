//! Small filesystem helpers shared by the drivers, the diff and the applier: extended
//! attributes, ownership and timestamps without following symlinks, reflink-or-copy of a file,
//! whole-tree copies for the native driver, and disk usage.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use crate::error::{IoContext, Result};

/// Extended attributes of `path` (not following a final symlink), sorted by name.
pub(crate) fn list_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr_query(path).ctx("list xattrs", path)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("list xattrs", path),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut buf = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name.as_str(), &mut buf[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => {
                    let need =
                        rustix::fs::lgetxattr_query(path, name.as_str()).ctx("read xattr", path)?;
                    buf.resize(need.max(buf.len() * 2), 0);
                }
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e).ctx("read xattr", path),
            }
        };
        if len != usize::MAX {
            buf.truncate(len);
            out.push((name, buf));
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute on `path` without following a final symlink.
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).ctx("set xattr", path)
}

/// One extended attribute of `path`, `None` when absent.
pub(crate) fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(rustix::io::Errno::RANGE) => {
            let all = list_xattrs(path)?;
            Ok(all.into_iter().find(|(n, _)| n == name).map(|(_, v)| v))
        }
        Err(e) => Err(e).ctx("read xattr", path),
    }
}

/// Sets atime and mtime of `path` without following a final symlink.
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> Result<()> {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1 as _,
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1 as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).ctx("set times", path)
}

/// Copies one regular file, sharing extents (`FICLONE`) where the filesystem can, and falling
/// back to a kernel-side copy otherwise.
pub(crate) fn clone_or_copy(src: &Path, dst: &Path) -> Result<()> {
    let from = fs::File::open(src).ctx("open", src)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .ctx("create", dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(());
    }
    let mut from = from;
    io::copy(&mut from, &mut to).ctx("copy", dst)?;
    Ok(())
}

/// Sets the owner of `path` without following a final symlink. In a user namespace an id
/// outside its maps fails with EINVAL: that becomes [`crate::Error::UnmappedId`], which says
/// how to map more ids.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && kiln_userns::in_user_namespace() => {
            Err(crate::Error::UnmappedId {
                path: path.to_path_buf(),
                uid,
                gid,
                hint: kiln_userns::subid_hint(
                    kiln_userns::rootless().and_then(|r| r.user).as_deref(),
                ),
            })
        }
        other => other.ctx("chown", path),
    }
}

/// Copies ownership, permission bits, xattrs and times of `meta` (read from `src`) onto `dst`.
pub(crate) fn copy_metadata(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    lchown(dst, meta.uid(), meta.gid())?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx("chmod", dst)?;
    }
    for (name, value) in list_xattrs(src)? {
        set_xattr(dst, &name, &value)?;
    }
    set_times(
        dst,
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    )
}

/// Creates a special file (device, fifo, socket) like the one `meta` describes.
pub(crate) fn make_special(dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if ft.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else if ft.is_fifo() {
        rustix::fs::FileType::Fifo
    } else {
        rustix::fs::FileType::Socket
    };
    rustix::fs::mknodat(
        CWD,
        dst,
        kind,
        rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
        meta.rdev(),
    )
    .ctx("mknod", dst)
}

/// Copies the tree `src` into `dst` (which must not exist) preserving hard links, owners, modes,
/// xattrs and times; regular files are reflinked where possible.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(src).to_path_buf();
            crate::Error::Io {
                op: "walk",
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk loop")),
            }
        })?;
        let rel = entry.path().strip_prefix(src).unwrap_or(Path::new(""));
        let target = dst.join(rel);
        let meta = entry.metadata().map_err(|e| crate::Error::Io {
            op: "stat",
            path: entry.path().to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("stat")),
        })?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&target).ctx("mkdir", &target)?;
            dirs.push((entry.path().to_path_buf(), target, meta));
            continue;
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &target).ctx("hard link", &target)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), target.clone());
        }
        if ft.is_file() {
            clone_or_copy(entry.path(), &target)?;
        } else if ft.is_symlink() {
            let to = fs::read_link(entry.path()).ctx("readlink", entry.path())?;
            std::os::unix::fs::symlink(&to, &target).ctx("symlink", &target)?;
        } else {
            make_special(&target, &meta)?;
        }
        copy_metadata(entry.path(), &target, &meta)?;
    }
    // Directory times last: creating children changed them.
    for (from, to, meta) in dirs.iter().rev() {
        copy_metadata(from, to, meta)?;
    }
    Ok(())
}

/// Disk usage of a tree: bytes allocated (hard links counted once) and number of inodes.
pub(crate) fn disk_usage(root: &Path) -> Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let (mut size, mut inodes) = (0u64, 0u64);
    if !root.exists() {
        return Ok((0, 0));
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| crate::Error::Io {
            op: "walk",
            path: root.to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk loop")),
        })?;
        let meta = fs::symlink_metadata(entry.path()).ctx("stat", entry.path())?;
        if seen.insert((meta.dev(), meta.ino())) {
            inodes += 1;
            size += meta.blocks() * 512;
        }
    }
    Ok((size, inodes))
}

/// Removes whatever is at `path` (file, symlink or whole tree); absent is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx("remove", path),
        Ok(_) => fs::remove_file(path).ctx("remove", path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", path),
    }
}

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
/// The temp file is named `tmp-<pid>-<starttime>-w<n>`, so one left by a killed process is
/// recognised (and removed) by the next `open`.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "tmp-{}-w{}",
        crate::owner::Owner::current().tag(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .ctx("create temp file", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename", path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync", dir)?;
    Ok(())
}

/// The bytes of a path, for sorting and tar names.
pub(crate) fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
