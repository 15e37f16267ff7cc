//! `ADD` of a local tar archive: extraction into a directory of the destination rootfs, contained
//! the way moby's `archive.Untar` is and more strictly. Entry names are cleaned and taken
//! relative to the destination (a leading `/` included, as moby does); a name or hard-link target
//! that climbs above the destination is refused. Every parent is resolved inside the rootfs by
//! the kernel (`kiln_fs`), so a symlink in the rootfs or one the archive itself made earlier
//! (`l -> /`, then `l/etc/passwd`) lands inside the root, never on the host; entries are made with
//! `*at` calls relative to the held parent directory, never following a final symlink, and
//! owners, modes and times are set on what was just made.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Extracts the tar stream `reader` into the directory `dest` (an absolute path inside the
/// rootfs at `root`, created when missing), owned by `chown` when given, else as archived.
pub(crate) fn extract(
    reader: impl Read,
    root: &Path,
    dest: &str,
    chown: Option<(u32, u32)>,
    line: usize,
) -> Result<()> {
    let root_fs = kiln_fs::Root::open(root)?;
    let dest_dir = root_fs.mkdir_all(dest, 0o755, chown)?;
    let dest = match root_fs.in_root_path(&dest_dir) {
        Some(p) => p,
        None => root_fs.canonical(dest, true)?,
    };
    let bad = |name: &[u8], why: &str| Error::Plan {
        line,
        message: format!(
            "invalid archive entry `{}`: {why}",
            String::from_utf8_lossy(name)
        ),
    };
    let read_err = |e: io::Error| Error::Io {
        op: "read archive",
        path: root.join(dest.trim_start_matches('/')),
        source: e,
    };
    let mut ar = tar::Archive::new(reader);
    let mut dir_times: Vec<(String, i64)> = Vec::new();
    for entry in ar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = contained_name(&raw) else {
            return Err(bad(&raw, "it climbs above the destination"));
        };
        if rel.is_empty() {
            continue;
        }
        let path = format!("{}/{rel}", dest.trim_end_matches('/'));
        let header = entry.header().clone();
        // Empty numeric fields read as 0, as Go's archive/tar reads them.
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let (uid, gid) = chown.unwrap_or((
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ));
        let mtime = header.mtime().unwrap_or(0) as i64;
        let kind = header.entry_type();
        if kind.is_dir() {
            root_fs.mkdir_all(&path, mode, None)?;
            let (parent, name) = root_fs.open_parent(&path)?;
            finish(&parent, &name, &path, mode, uid, gid, None)?;
            dir_times.push((path, mtime));
            continue;
        }
        let parent_path = path.rsplit_once('/').map_or("/", |(p, _)| p);
        let parent_path = if parent_path.is_empty() {
            "/"
        } else {
            parent_path
        };
        let parent = root_fs.mkdir_all(parent_path, 0o755, chown)?;
        let name = OsStr::new(path.rsplit('/').next().unwrap_or(&path)).to_os_string();
        remove_non_dir(&root_fs, &parent, &name, &path)?;
        let io = |op: &'static str| {
            let path = path.clone();
            move |e: Errno| Error::Io {
                op,
                path: root.join(path.trim_start_matches('/')),
                source: e.into(),
            }
        };
        if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&raw, "hard link without a target"))?;
            let Some(trel) = contained_name(&target) else {
                return Err(bad(&raw, "its link target climbs above the destination"));
            };
            let tpath = format!("{}/{trel}", dest.trim_end_matches('/'));
            let (tdir, tname) = root_fs.open_parent(&tpath)?;
            rustix::fs::linkat(&tdir, &tname, &parent, &name, AtFlags::empty())
                .map_err(io("hard link"))?;
            continue;
        }
        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| bad(&raw, "symlink without a target"))?;
            rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, &name)
                .map_err(io("symlink"))?;
            finish(&parent, &name, &path, mode, uid, gid, Some(mtime))?;
            continue;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let fd = rustix::fs::openat(
                &parent,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(io("create"))?;
            let mut file = File::from(fd);
            io::copy(&mut entry, &mut file).map_err(read_err)?;
            set_xattrs(&mut entry, &file);
            finish(&parent, &name, &path, mode, uid, gid, Some(mtime))?;
            continue;
        }
        let node = if kind.is_character_special() {
            FileType::CharacterDevice
        } else if kind.is_block_special() {
            FileType::BlockDevice
        } else if kind.is_fifo() {
            FileType::Fifo
        } else {
            // PAX/GNU metadata entries are consumed by the tar reader; anything else is skipped.
            continue;
        };
        let dev = rustix::fs::makedev(
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        rustix::fs::mknodat(&parent, &name, node, Mode::from_raw_mode(mode), dev)
            .map_err(io("mknod"))?;
        finish(&parent, &name, &path, mode, uid, gid, Some(mtime))?;
    }
    // Directory times last: making their children changed them.
    for (path, mtime) in dir_times.iter().rev() {
        let (parent, name) = root_fs.open_parent(path)?;
        set_times(&parent, &name, path, *mtime)?;
    }
    Ok(())
}

/// The entry name relative to the destination, cleaned; `None` when `..` climbs above it.
fn contained_name(raw: &[u8]) -> Option<String> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(
        parts
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// Removes what is at `parent/name` unless it is a directory (moby replaces any non-directory,
/// and a directory by a non-directory).
fn remove_non_dir(root: &kiln_fs::Root, parent: &OwnedFd, name: &OsStr, path: &str) -> Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            // A directory where a file goes: remove the tree. Its path has no symlink component
            // (canonical, final not followed) and std's remove_dir_all never follows links.
            let host = root.resolve(path, false)?;
            std::fs::remove_dir_all(&host).map_err(|e| Error::Io {
                op: "remove",
                path: host,
                source: e,
            })
        }
        Err(e) => Err(Error::Io {
            op: "remove",
            path: root.host_path(path),
            source: e.into(),
        }),
    }
}

/// Owner, mode (not for symlinks) and, when given, mtime of the entry just made.
fn finish(
    parent: &OwnedFd,
    name: &OsStr,
    path: &str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<i64>,
) -> Result<()> {
    let err = |op: &'static str| {
        move |e: Errno| Error::Io {
            op,
            path: path.into(),
            source: e.into(),
        }
    };
    rustix::fs::chownat(
        parent,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(err("chown"))?;
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err("stat"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
        // chown cleared set-id bits; the entry is not a symlink, so chmodat cannot be diverted.
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(err("chmod"))?;
    }
    if let Some(t) = mtime {
        set_times(parent, name, path, t)?;
    }
    Ok(())
}

fn set_times(parent: &impl AsFd, name: &OsStr, path: &str, mtime: i64) -> Result<()> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        parent,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::Io {
        op: "set times",
        path: path.into(),
        source: e.into(),
    })
}

/// `SCHILY.xattr.*` PAX records onto the file; refused ones (security.*, trusted.* without the
/// capability) are ignored as BuildKit ignores them.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, file: &File) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            let _ = rustix::fs::fsetxattr(
                file,
                OsStr::from_bytes(name),
                ext.value_bytes(),
                rustix::fs::XattrFlags::empty(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            h.set_uid(7);
            h.set_gid(8);
            h.set_mtime(1_700_000_000);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_size(0);
                b.append_link(&mut h, name, data).expect("append link");
            } else {
                h.set_size(data.len() as u64);
                // Raw name bytes: `append_data` refuses absolute names and `..`.
                let gnu = h.as_gnu_mut().expect("gnu");
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_bytes()).expect("append");
            }
        }
        b.into_inner().expect("finish")
    }

    #[test]
    fn absolute_names_land_under_the_destination_and_chown_stays_inside() {
        // Issue 10, reproduction 2: `ADD --chown=4321:4321 evil.tar /d/` with a member named
        // `/tmp/victim...` chowned that host file.
        let root = tempfile::tempdir().expect("root");
        let host = tempfile::tempdir().expect("host");
        let bait = host.path().join("bait");
        fs::write(&bait, "host").expect("bait");
        let before = fs::metadata(&bait).expect("stat");
        let name = bait.to_str().expect("utf8").to_string();
        let data = tar_of(&[(&name, tar::EntryType::Regular, "evil")]);
        extract(&data[..], root.path(), "/d", Some((4321, 4321)), 3).expect("extract");
        let after = fs::metadata(&bait).expect("stat");
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(fs::read_to_string(&bait).expect("read"), "host");
        let inside = root.path().join("d").join(name.trim_start_matches('/'));
        assert_eq!(fs::read_to_string(&inside).expect("inside"), "evil");
        let m = fs::metadata(&inside).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4321, 4321, 0o640));
    }

    #[test]
    fn symlinks_in_the_rootfs_or_the_archive_stay_inside() {
        let root = tempfile::tempdir().expect("root");
        let host = tempfile::tempdir().expect("host");
        symlink(host.path(), root.path().join("d")).expect("symlink");
        let data = tar_of(&[
            ("l", tar::EntryType::Symlink, "/"),
            ("l/escaped", tar::EntryType::Regular, "x"),
            ("hl", tar::EntryType::Link, "l/escaped"),
        ]);
        extract(&data[..], root.path(), "/d", None, 1).expect("extract");
        assert_eq!(
            fs::read_dir(host.path()).expect("read").count(),
            0,
            "host untouched"
        );
        // `/d` -> host path, followed inside the root; `l -> /` is the rootfs root.
        assert_eq!(
            fs::read_to_string(root.path().join("escaped")).expect("read"),
            "x"
        );
        let m = fs::symlink_metadata(root.path().join("escaped")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.nlink()), (7, 8, 2));
    }

    #[test]
    fn dot_dot_above_the_destination_is_refused() {
        let root = tempfile::tempdir().expect("root");
        let data = tar_of(&[("a/../../x", tar::EntryType::Regular, "x")]);
        let err = extract(&data[..], root.path(), "/d", None, 5).expect_err("refused");
        assert!(
            err.to_string()
                .contains("Dockerfile:5: invalid archive entry `a/../../x`"),
            "{err}"
        );
        assert!(!root.path().join("x").exists());
    }
}
