//! Subordinate id ranges: `/etc/subuid` and `/etc/subgid` (`NAME_OR_UID:FIRST:COUNT` per line,
//! as shadow's `newuidmap` reads them), and the hint that tells a user how to get one.

use std::fs;

/// One subordinate range: ids `first..first+count` of the initial namespace that a user may map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    /// First id.
    pub first: u32,
    /// How many ids.
    pub count: u32,
}

/// The ranges of `/etc/subuid`-style `text` that belong to the user named `name` or with the
/// numeric id `id`, in file order. Comments (`#`), blank and malformed lines are skipped, as
/// shadow does.
pub fn parse_subids(text: &str, name: Option<&str>, id: u32) -> Vec<SubIdRange> {
    let id = id.to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(':');
            let (who, first, count) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() || !(Some(who) == name || who == id) {
                return None;
            }
            let range = SubIdRange {
                first: first.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

/// The ranges of `path` (`/etc/subuid` or `/etc/subgid`) for the user; empty when the file is
/// missing or unreadable.
pub(crate) fn read_subids(path: &str, name: Option<&str>, id: u32) -> Vec<SubIdRange> {
    fs::read_to_string(path).map_or_else(|_| Vec::new(), |t| parse_subids(&t, name, id))
}

/// What to tell a user whose build needs an id their user namespace does not map: the files
/// and the command that adds a subordinate range (`USER` stands for the user's name when it is
/// not known).
pub fn subid_hint(user: Option<&str>) -> String {
    let user = user.unwrap_or("USER");
    format!(
        "kiln runs rootless with only one id mapped (no range for {user} in /etc/subuid and \
         /etc/subgid, or newuidmap/newgidmap missing: apt-get install uidmap); add a range \
         with `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_users_lines_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\n\
                    alice:400000:5\nbroken:line\nalice:x:1\nalice:1:0\n";
        assert_eq!(
            parse_subids(text, Some("alice"), 1000),
            [
                SubIdRange {
                    first: 100000,
                    count: 65536
                },
                SubIdRange {
                    first: 300000,
                    count: 10
                },
                SubIdRange {
                    first: 400000,
                    count: 5
                }
            ]
        );
        assert_eq!(
            parse_subids(text, None, 1000),
            [SubIdRange {
                first: 300000,
                count: 10
            }]
        );
        assert!(parse_subids(text, Some("carol"), 1001).is_empty());
    }

    #[test]
    fn hint_names_the_file_and_the_command() {
        let h = subid_hint(Some("alice"));
        assert!(h.contains("/etc/subuid"), "{h}");
        assert!(
            h.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"),
            "{h}"
        );
    }
}
