//! `USER` resolution through the rootfs' /etc/passwd and /etc/group, with the semantics of
//! BuildKit's `oci.GetUser` (a numeric fast path, then moby/sys/user's `GetExecUser`) and the
//! primary group always first in the supplementary list (`ensureAdditionalGids`).

use crate::error::Error;

/// The identity a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, the primary group first.
    pub(crate) groups: Vec<u32>,
    /// The home directory from /etc/passwd (`/` when unknown).
    pub(crate) home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first().copied().unwrap_or(""),
            uid: f.get(2)?.trim().parse().ok()?,
            gid: f.get(3)?.trim().parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first().copied().unwrap_or(""),
            gid: f.get(2)?.trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

fn parse_id(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    s.parse().ok()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...). `passwd`/`group` are
/// the rootfs files' contents, `None` when absent.
pub(crate) fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, Error> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let home_of = |uid: u32| {
        passwd_entries(passwd)
            .find(|e| e.uid == uid)
            .map_or_else(|| "/".to_owned(), |e| non_empty_home(e.home))
    };

    // BuildKit's fast path: both parts numeric (or `root`), or one numeric part that also
    // serves as the gid. No supplementary groups.
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if spec.is_empty() {
        return Ok(ExecUser {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: home_of(0),
        });
    }
    if let Some(uid) = parse_id(user_arg) {
        let gid = match group_arg {
            None => Some(uid),
            Some(g) => parse_id(g),
        };
        if let Some(gid) = gid {
            return Ok(ExecUser {
                uid,
                gid,
                groups: vec![gid],
                home: home_of(uid),
            });
        }
    }

    // moby/sys/user GetExecUser.
    let numeric_uid: Option<u32> = user_arg.parse().ok();
    let found = passwd_entries(passwd).find(|e| match numeric_uid {
        _ if user_arg.is_empty() => e.uid == 0,
        Some(uid) => e.uid == uid,
        None => e.name == user_arg,
    });
    let (uid, mut gid, home, matched_name) = match &found {
        Some(e) => (e.uid, e.gid, non_empty_home(e.home), Some(e.name)),
        None => match numeric_uid {
            Some(uid) if !user_arg.is_empty() => (uid, 0, "/".to_owned(), None),
            _ if user_arg.is_empty() => (0, 0, "/".to_owned(), None),
            _ => {
                return Err(Error::UserNotFound {
                    user: user_arg.to_owned(),
                });
            }
        },
    };
    let mut supplementary = Vec::new();
    match group_arg {
        Some(g) if !g.is_empty() => {
            let numeric_gid: Option<u32> = g.parse().ok();
            let hit = group_entries(group).find(|e| match numeric_gid {
                Some(id) => e.gid == id,
                None => e.name == g,
            });
            gid = match (hit, numeric_gid) {
                (Some(e), _) => e.gid,
                (None, Some(id)) => id,
                (None, None) => {
                    return Err(Error::GroupNotFound {
                        group: g.to_owned(),
                    });
                }
            };
        }
        _ => {
            if let Some(name) = matched_name {
                supplementary = group_entries(group)
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    let mut groups = vec![gid];
    for g in supplementary {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

fn non_empty_home(home: &str) -> String {
    if home.is_empty() {
        "/".to_owned()
    } else {
        home.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:alice,bob\nusers:x:100:\nalice:x:1000:\n\
        docker:x:999:alice\n";

    fn r(spec: &str) -> Result<ExecUser, Error> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_root_home() {
        let u = r("").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![0], "/root")
        );
    }

    #[test]
    fn name_gets_passwd_gid_home_and_supplementary_groups() {
        let u = r("alice").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 10, 999]);
        assert_eq!(u.home, "/home/alice");
    }

    #[test]
    fn numeric_user_alone_uses_uid_as_gid_like_buildkit() {
        let u = r("1001").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1001, 1001, vec![1001]));
        assert_eq!(u.home, "/home/bob");
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let u = r("alice:users").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 100, vec![100]));
        let u = r("1000:wheel").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 10, vec![10]));
        let u = r("bob:4242").unwrap();
        assert_eq!((u.uid, u.gid), (1001, 4242));
    }

    #[test]
    fn unknown_names_fail_with_buildkit_text() {
        let e = r("nobody").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let e = r("alice:nogroup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }

    #[test]
    fn missing_files_still_allow_numbers() {
        let u = resolve("5:6", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (5, 6, "/"));
        assert!(resolve("alice", None, None).is_err());
    }
}
