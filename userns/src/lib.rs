//! User namespaces for kiln: which one this process is in (so the snapshotter and executor can
//! pick what works there, such as overlayfs `userxattr` or a bind of /sys), and entering one so
//! an ordinary user builds what root builds (rootless): [`enter_rootless`] moves the whole
//! process into a user namespace where the user is root and their subordinate ids
//! (`/etc/subuid`, `/etc/subgid`) are mapped, as `buildah unshare` does.
//!
//! ```no_run
//! // First thing in `main`, before any thread starts.
//! match kiln_userns::enter_rootless() {
//!     Ok(kiln_userns::Entry::Entered(r)) if r.single_id.is_some() => {
//!         eprintln!("note: {}", kiln_userns::subid_hint(r.user.as_deref()));
//!     }
//!     Ok(_) => {}
//!     Err(e) => eprintln!("error: {e}"),
//! }
//! ```

mod enter;
mod keeper;
mod subid;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};

pub use enter::{Entry, Rootless, enter_rootless, rootless, started_as_root};
pub use subid::{SubIdRange, parse_subids, subid_hint};

/// One line of `/proc/self/uid_map` or `gid_map`: ids `inside..inside+count` of this
/// namespace are ids `outside..outside+count` of the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id in the parent namespace.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The uid and gid maps of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    /// Uid ranges.
    pub uids: Vec<IdRange>,
    /// Gid ranges.
    pub gids: Vec<IdRange>,
}

/// The errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a `/proc` file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A map file did not parse.
    #[error("{path}: malformed line `{line}`")]
    Malformed {
        /// The file.
        path: String,
        /// The line.
        line: String,
    },
    /// A non-root process with several threads cannot enter a user namespace.
    #[error(
        "cannot build rootless: this process already runs {threads} threads and only a \
         single-threaded process can enter a user namespace; call \
         `kiln_userns::enter_rootless()` at the top of `main`, before any thread starts \
         (the `kiln` binary does), or run as root"
    )]
    MultiThreaded {
        /// How many threads were running.
        threads: usize,
    },
    /// The kernel refused to create the user namespace.
    #[error(
        "cannot build rootless: creating a user namespace failed (unprivileged user \
         namespaces may be disabled: sysctl user.max_user_namespaces, \
         kernel.unprivileged_userns_clone, an AppArmor or seccomp policy; docker's default \
         seccomp profile refuses them to a container without CAP_SYS_ADMIN), or run as root"
    )]
    Unshare {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The same error again (for the remembered outcome of `enter_rootless`); an I/O cause
    /// keeps its OS error number or, without one, its kind and text.
    fn duplicate(&self) -> Error {
        let io = |e: &std::io::Error| {
            e.raw_os_error().map_or_else(
                || std::io::Error::new(e.kind(), e.to_string()),
                std::io::Error::from_raw_os_error,
            )
        };
        match self {
            Error::Io { what, source } => Error::Io {
                what: what.clone(),
                source: io(source),
            },
            Error::Malformed { path, line } => Error::Malformed {
                path: path.clone(),
                line: line.clone(),
            },
            Error::MultiThreaded { threads } => Error::MultiThreaded { threads: *threads },
            Error::Unshare { source } => Error::Unshare { source: io(source) },
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The full identity map of the initial user namespace.
const FULL: IdRange = IdRange {
    inside: 0,
    outside: 0,
    count: u32::MAX,
};

impl IdMapping {
    /// The mapping of the calling process.
    pub fn current() -> Result<Self> {
        Ok(IdMapping {
            uids: read_map("/proc/self/uid_map")?,
            gids: read_map("/proc/self/gid_map")?,
        })
    }

    /// Whether this is the initial user namespace (the identity map over all ids).
    pub fn is_initial(&self) -> bool {
        self.uids == [FULL] && self.gids == [FULL]
    }

    /// Whether only one uid is mapped (a user namespace made without a subordinate range).
    pub fn is_single_id(&self) -> bool {
        self.uids.iter().map(|r| u64::from(r.count)).sum::<u64>() == 1
    }

    /// Whether uid `id` of this namespace is mapped to a parent id.
    pub fn maps_uid(&self, id: u32) -> bool {
        self.uids
            .iter()
            .any(|r| id >= r.inside && u64::from(id) < u64::from(r.inside) + u64::from(r.count))
    }
}

/// Set once this process was seen in a user namespace: it can never go back to the initial one
/// (nor can a child it forks), so later calls need not read the maps again.
static IN_USER_NAMESPACE: AtomicBool = AtomicBool::new(false);

/// Whether the calling process is in a user namespace other than the initial one (for example
/// a rootless build's). `false` when the maps cannot be read.
pub fn in_user_namespace() -> bool {
    if IN_USER_NAMESPACE.load(Ordering::Relaxed) {
        return true;
    }
    let inside = IdMapping::current().is_ok_and(|m| !m.is_initial());
    if inside {
        IN_USER_NAMESPACE.store(true, Ordering::Relaxed);
    }
    inside
}

/// Parses a `uid_map`/`gid_map` file.
fn read_map(path: &str) -> Result<Vec<IdRange>> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        what: format!("read {path}"),
        source,
    })?;
    parse_map(path, &text)
}

fn parse_map(path: &str, text: &str) -> Result<Vec<IdRange>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let malformed = || Error::Malformed {
                path: path.to_owned(),
                line: line.to_owned(),
            };
            let mut it = line.split_whitespace().map(str::parse::<u32>);
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count)), None) => Ok(IdRange {
                    inside,
                    outside,
                    count,
                }),
                _ => Err(malformed()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let m = parse_map(
            "uid_map",
            "         0       1000          1\n         1     100000      65536\n",
        )
        .unwrap();
        assert_eq!(
            m,
            [
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                }
            ]
        );
        let e = parse_map("uid_map", "0 x 1\n").unwrap_err();
        assert_eq!(e.to_string(), "uid_map: malformed line `0 x 1`");
    }

    #[test]
    fn unshare_error_names_the_policies_and_keeps_its_cause_once() {
        let e = Error::Unshare {
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("seccomp") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        assert!(
            !msg.contains("os error"),
            "the cause is the source, not the text: {msg}"
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("Operation not permitted (os error 1)")
        );
    }

    #[test]
    fn initial_namespace_is_detected() {
        let full = IdMapping {
            uids: vec![FULL],
            gids: vec![FULL],
        };
        assert!(full.is_initial() && !full.is_single_id() && full.maps_uid(12345));
        let single = IdMapping {
            uids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gids: vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
        };
        assert!(!single.is_initial() && single.is_single_id());
        assert!(single.maps_uid(0) && !single.maps_uid(1));
    }
}
