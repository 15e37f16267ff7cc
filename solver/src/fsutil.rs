//! Thin wrappers over the few filesystem syscalls std does not offer (xattrs, `lchown`,
//! `utimensat` without following links, `mknod`), each returning an `Error` naming its path.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        op: "encode path",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn last_err(op: &'static str, path: &Path) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::last_os_error(),
    }
}

/// Lists the extended attributes of a path (not following a final symlink), sorted by name.
pub(crate) fn list_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: `c` is a valid NUL-terminated path and `buf` is writable for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP | libc::ENOENT) => return Ok(Vec::new()),
            _ => {
                return Err(Error::Io {
                    op: "list xattrs",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
    };
    let mut out = Vec::new();
    for name in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
            let r = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if r >= 0 {
                val.truncate(r as usize);
                break;
            }
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
                && val.len() < 1 << 20
            {
                val.resize(val.len() * 4, 0);
                continue;
            }
            val.clear();
            break;
        }
        out.push((String::from_utf8_lossy(name).to_string(), val));
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute without following a final symlink.
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| last_err("encode xattr name", path))?;
    // SAFETY: valid NUL-terminated strings and a readable buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(last_err("set xattr", path));
    }
    Ok(())
}

/// `lchown(2)`.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| Error::Io {
        op: "chown",
        path: path.to_path_buf(),
        source,
    })
}

/// Sets access and modification times (seconds, nanoseconds) without following symlinks.
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> Result<()> {
    let c = cpath(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_err("set times", path));
    }
    Ok(())
}

/// `mknod(2)` for fifos and device nodes.
pub(crate) fn mknod(path: &Path, mode: u32, rdev: u64) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, rdev) };
    if r != 0 {
        return Err(last_err("mknod", path));
    }
    Ok(())
}
