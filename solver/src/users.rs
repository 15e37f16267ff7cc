//! User and group names resolved through a stage's root filesystem (`/etc/passwd`,
//! `/etc/group`), for `COPY --chown` and the owner of directories `WORKDIR` creates.

use std::path::Path;

use crate::context::SourceTree;
use crate::error::{Error, Result};

/// Reads `file` of the rootfs (resolved inside it); `Ok(None)` when it is absent, as
/// BuildKit treats a missing or not-a-directory path (no such user).
fn read_db(rootfs: &Path, file: &str) -> std::io::Result<Option<String>> {
    let tree = SourceTree {
        root: rootfs,
        ignore: None,
    };
    let Ok(p) = tree.resolve(file, true) else {
        return Ok(None);
    };
    match std::fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One part of a `--chown`/`USER` value as BuildKit's `llb.WithUser` reads it: `root` and a
/// decimal 32-bit number are ids, anything else (the empty string included) a name.
enum Part<'a> {
    Id(u32),
    Name(&'a str),
}

fn part(s: &str) -> Part<'_> {
    if s == "root" {
        return Part::Id(0);
    }
    match s.parse::<i32>() {
        // As Go passes a negative id to chown(2): the kernel's (uid_t) of it.
        #[allow(clippy::cast_sign_loss)]
        Ok(n) => Part::Id(n as u32),
        Err(_) => Part::Name(s),
    }
}

/// The first `/etc/passwd` entry named `name`: (uid, primary gid).
fn passwd_entry(db: &str, name: &str) -> Option<(u32, u32)> {
    db.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The first `/etc/group` entry named `name`: its gid.
fn group_entry(db: &str, name: &str) -> Option<u32> {
    db.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

/// Resolves a `--chown` value (`user`, `user:group`, `:group`, `user:`, ids or names) against
/// the destination rootfs exactly as BuildKit v0.24 does (`llb.WithUser`, then the file op's
/// `readUser`):
/// - a user name gives its uid and primary gid from `/etc/passwd`; an id (or `root`) gives
///   that number for both; an empty user part is id 0;
/// - a group name then sets the gid from `/etc/group`, an id sets it directly, and an empty
///   group part (`user:`) sets gid 0;
/// - a name that is not in the file (or a rootfs without the file) changes nothing: the ids
///   stay 0 (user) or the user's gid (group), with no error, as in BuildKit.
///
/// Only a database that exists but cannot be read is an error (naming the line).
pub(crate) fn resolve_chown(rootfs: Option<&Path>, spec: &str, line: usize) -> Result<(u32, u32)> {
    let db = |file: &str| -> Result<Option<String>> {
        let Some(root) = rootfs else {
            return Ok(None);
        };
        read_db(root, file).map_err(|e| Error::Plan {
            line,
            message: format!("--chown={spec}: read /{file}: {e}"),
        })
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (mut uid, mut gid) = (0, 0);
    match part(u) {
        Part::Id(n) => (uid, gid) = (n, n),
        Part::Name("") => {}
        Part::Name(name) => {
            if let Some((a, b)) = db("etc/passwd")?.and_then(|d| passwd_entry(&d, name)) {
                (uid, gid) = (a, b);
            }
        }
    }
    match g.map(part) {
        None => {}
        Some(Part::Id(n)) => gid = n,
        Some(Part::Name("")) => gid = 0,
        Some(Part::Name(name)) => {
            if let Some(n) = db("etc/group")?.and_then(|d| group_entry(&d, name)) {
                gid = n;
            }
        }
    }
    Ok((uid, gid))
}

/// Resolves a `USER` value for the owner of the directories `WORKDIR` creates: BuildKit passes
/// it through the same `llb.WithUser` as `--chown`, so the same rules; a database that cannot
/// be read gives root.
pub(crate) fn resolve_user(rootfs: Option<&Path>, spec: &str) -> (u32, u32) {
    if spec.is_empty() {
        return (0, 0);
    }
    resolve_chown(rootfs, spec, 0).unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_forms_resolve_as_buildkit_does() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("mkdir");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/h:/bin/sh\napp:x:7:7::/dup:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:\nstaff:x:51:\n",
        )
        .expect("write");
        let r = Some(d.path());
        let c = |spec: &str| resolve_chown(r, spec, 1).expect(spec);
        // A name: its uid and primary gid (the first entry); an id: that number twice.
        assert_eq!(c("app"), (1000, 1001));
        assert_eq!(c("1000"), (1000, 1000));
        assert_eq!(c("2000"), (2000, 2000), "an id absent from /etc/passwd");
        assert_eq!(c("root"), (0, 0));
        // Groups by name, by id, absent, empty; an empty user part is root.
        assert_eq!(c("app:staff"), (1000, 50));
        assert_eq!(c("app:60"), (1000, 60));
        assert_eq!(c("12:34"), (12, 34));
        assert_eq!(c(":staff"), (0, 50));
        assert_eq!(c("app:"), (1000, 0));
        assert_eq!(c("app:nogroup"), (1000, 1001));
        assert_eq!(c("2000:staff"), (2000, 50));
        assert_eq!(c("app:root"), (1000, 0));
        // An unknown name is root, as BuildKit's readUser leaves it (no error).
        assert_eq!(c("nobody2"), (0, 0));
        assert_eq!(c("nobody2:staff"), (0, 50));
        // No /etc/group (or no rootfs): names are not found.
        std::fs::remove_file(d.path().join("etc/group")).expect("rm");
        assert_eq!(c("app:staff"), (1000, 1001));
        assert_eq!(resolve_chown(None, "app:5", 1).expect("no rootfs"), (0, 5));
        // A database that exists but cannot be read is an error naming the line.
        std::fs::create_dir(d.path().join("etc/group")).expect("mkdir");
        let err = resolve_chown(r, "app:staff", 7).expect_err("unreadable group file");
        assert!(err.to_string().contains("Dockerfile:7"), "{err}");
        // WORKDIR's owner follows the same rules.
        assert_eq!(resolve_user(r, "app"), (1000, 1001));
        assert_eq!(resolve_user(r, "1000:0"), (1000, 0));
        assert_eq!(resolve_user(r, "1000"), (1000, 1000));
        assert_eq!(resolve_user(r, ""), (0, 0));
    }
}
