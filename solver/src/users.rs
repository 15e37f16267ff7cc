//! User and group names resolved through a stage's root filesystem (`/etc/passwd`,
//! `/etc/group`), for `COPY --chown` and the owner of directories `WORKDIR` creates.

use std::path::Path;

use crate::context::SourceTree;
use crate::error::{Error, Result};

fn read_db(rootfs: &Path, file: &str) -> String {
    let tree = SourceTree {
        root: rootfs,
        ignore: None,
    };
    let Ok(p) = tree.resolve(file, true) else {
        return String::new();
    };
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default()
}

/// Looks up a user name (or number) in the rootfs: `(uid, primary gid)`.
fn lookup_user(rootfs: &Path, user: &str) -> Option<(u32, u32)> {
    let db = read_db(rootfs, "etc/passwd");
    for line in db.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == user {
            return Some((f[2].parse().ok()?, f[3].parse().ok()?));
        }
    }
    None
}

fn lookup_group(rootfs: &Path, group: &str) -> Option<u32> {
    let db = read_db(rootfs, "etc/group");
    for line in db.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == group {
            return f[2].parse().ok();
        }
    }
    None
}

/// Resolves a `--chown` value (`user`, `user:group`, numbers or names) against the rootfs.
/// As Docker documents, a user without a group uses the same number as its gid.
pub(crate) fn resolve_chown(rootfs: Option<&Path>, spec: &str, line: usize) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => rootfs.and_then(|r| lookup_user(r, u)).map(|(u, _)| u).ok_or_else(|| Error::Plan {
            line,
            message: format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {u}: no such user: {u}"),
        })?,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => rootfs.and_then(|r| lookup_group(r, g)).ok_or_else(|| Error::Plan {
                line,
                message: format!("unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}"),
            })?,
        },
    };
    Ok((uid, gid))
}

/// Resolves a `USER` value for the owner of created directories: a name gives its uid and
/// primary gid; unknown names fall back to root.
pub(crate) fn resolve_user(rootfs: Option<&Path>, spec: &str) -> (u32, u32) {
    if spec.is_empty() {
        return (0, 0);
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => {
            let primary = rootfs
                .and_then(|r| {
                    let db = read_db(r, "etc/passwd");
                    db.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 4 && f[2] == u)
                            .then(|| f[3].parse().ok())
                            .flatten()
                    })
                })
                .unwrap_or(0);
            (n, primary)
        }
        Err(_) => rootfs.and_then(|r| lookup_user(r, u)).unwrap_or((0, 0)),
    };
    let gid = match g {
        None => primary,
        Some(g) => g
            .parse()
            .ok()
            .or_else(|| rootfs.and_then(|r| lookup_group(r, g)))
            .unwrap_or(0),
    };
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_lookup() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("mkdir");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/h:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("write");
        let r = Some(d.path());
        assert_eq!(resolve_chown(r, "app", 1).expect("app"), (1000, 1000));
        assert_eq!(
            resolve_chown(r, "app:staff", 1).expect("app:staff"),
            (1000, 50)
        );
        assert_eq!(resolve_chown(r, "12:34", 1).expect("numbers"), (12, 34));
        let err = resolve_chown(r, "nobody2", 7).expect_err("unknown user");
        assert!(err.to_string().contains("Dockerfile:7"), "{err}");
        assert_eq!(resolve_user(r, "app"), (1000, 1001));
        assert_eq!(resolve_user(r, "1000:0"), (1000, 0));
    }
}
