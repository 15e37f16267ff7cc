//! The ids a container can use when kiln runs inside a user namespace (rootless): only the
//! mapped ones. With a subordinate range everything works as with root; with a single mapped
//! id (no /etc/subuid range) a step as another user cannot start and `setgroups` is denied, so
//! the init checks the step's user up front and says how to add a range.

use kiln_userns::{IdMapping, IdRange};

use crate::error::{Error, Result};
use crate::user::ExecUser;

/// The user namespace this process is in, as far as the container cares.
#[derive(Debug, Clone)]
pub(crate) struct IdView {
    /// `None` in the initial namespace (every id is mapped).
    mapping: Option<IdMapping>,
    /// `/proc/self/setgroups` says `deny` (an unprivileged single-id map).
    setgroups_denied: bool,
}

fn maps(ranges: &[IdRange], id: u32) -> bool {
    ranges
        .iter()
        .any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.count))
}

impl IdView {
    /// The namespace of the calling process (from `kiln_userns`).
    pub(crate) fn current() -> IdView {
        let mapping = IdMapping::current().ok().filter(|m| !m.is_initial());
        let setgroups_denied = mapping.is_some()
            && std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        IdView {
            mapping,
            setgroups_denied,
        }
    }

    /// Whether only one id is mapped.
    pub(crate) fn single_id(&self) -> bool {
        self.mapping.as_ref().is_some_and(IdMapping::is_single_id)
    }

    /// Whether `setgroups(2)` may be called (a single-id map leaves the groups as they are).
    pub(crate) fn may_set_groups(&self) -> bool {
        !self.setgroups_denied && !self.single_id()
    }

    /// Whether gid `gid` exists here.
    pub(crate) fn maps_gid(&self, gid: u32) -> bool {
        self.mapping.as_ref().is_none_or(|m| maps(&m.gids, gid))
    }

    fn maps_uid(&self, uid: u32) -> bool {
        self.mapping.as_ref().is_none_or(|m| m.maps_uid(uid))
    }

    /// Fails when the step's user, group or supplementary groups are not mapped, naming
    /// /etc/subuid and the command that adds a range.
    pub(crate) fn check_user(&self, written: &str, user: &ExecUser) -> Result<()> {
        let groups = if self.may_set_groups() {
            user.groups.as_slice()
        } else {
            &[]
        };
        let missing = if !self.maps_uid(user.uid) {
            Some(format!("uid {}", user.uid))
        } else if !self.maps_gid(user.gid) {
            Some(format!("gid {}", user.gid))
        } else {
            groups
                .iter()
                .find(|g| !self.maps_gid(**g))
                .map(|g| format!("group {g}"))
        };
        let Some(missing) = missing else {
            return Ok(());
        };
        let shown = if written.is_empty() { "root" } else { written };
        Err(Error::Setup(format!(
            "user `{shown}` needs {missing}, which kiln's user namespace does not map: {}",
            self.hint()
        )))
    }

    /// How to get a subordinate range, naming the outside user when /etc/passwd knows it.
    pub(crate) fn hint(&self) -> String {
        let outside = self
            .mapping
            .as_ref()
            .and_then(|m| m.uids.first())
            .map(|r| r.outside);
        let name = outside.and_then(passwd_name);
        kiln_userns::subid_hint(name.as_deref())
    }
}

/// The name of `uid` in the host's /etc/passwd.
fn passwd_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid.to_string()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> IdView {
        let one = IdRange {
            inside: 0,
            outside: 4_000_000,
            count: 1,
        };
        IdView {
            mapping: Some(IdMapping {
                uids: vec![one],
                gids: vec![one],
            }),
            setgroups_denied: true,
        }
    }

    fn user(uid: u32, gid: u32, groups: Vec<u32>) -> ExecUser {
        ExecUser {
            uid,
            gid,
            groups,
            home: "/".into(),
        }
    }

    #[test]
    fn single_id_allows_root_only_and_says_how_to_add_a_range() {
        let ids = single();
        assert!(ids.single_id() && !ids.may_set_groups() && !ids.maps_gid(5));
        assert!(ids.check_user("", &user(0, 0, vec![0, 10])).is_ok());
        let err = ids
            .check_user("1000", &user(1000, 1000, vec![1000]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "user `1000` needs uid 1000, which kiln's user namespace does not map: "
            ),
            "{err}"
        );
        assert!(err.contains("/etc/subuid"), "{err}");
        assert!(
            err.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER"),
            "{err}"
        );
        let err = ids.check_user("0:5", &user(0, 5, vec![5])).unwrap_err();
        assert!(err.to_string().contains("needs gid 5"), "{err}");
    }

    #[test]
    fn initial_namespace_maps_everything() {
        let ids = IdView {
            mapping: None,
            setgroups_denied: false,
        };
        assert!(!ids.single_id() && ids.may_set_groups() && ids.maps_gid(5));
        assert!(
            ids.check_user("app", &user(1000, 1000, vec![1000, 27]))
                .is_ok()
        );
    }
}
