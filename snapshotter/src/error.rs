//! The crate's one error type. Every variant names the snapshot key, path or digest involved so a
//! message read in a build log says what failed and where.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in kiln-snapshotter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed on `path`.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done (`create`, `read`, `mount`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing a stream (layer blob, tar stream) failed.
    #[error("{op}: {source}")]
    Stream {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No snapshot with this key or name exists.
    #[error("snapshot `{0}` does not exist")]
    NotFound(String),
    /// A snapshot with this key or name exists already.
    #[error("snapshot `{0}` already exists")]
    AlreadyExists(String),
    /// The snapshot is of the wrong kind for the operation (e.g. committing a view).
    #[error("snapshot `{key}` is {actual}, expected {expected}")]
    WrongKind {
        /// The snapshot key.
        key: String,
        /// The kind it has.
        actual: &'static str,
        /// The kind the operation needs.
        expected: &'static str,
    },
    /// The snapshot still has children and cannot be removed.
    #[error("snapshot `{key}` has {children} child snapshot(s) and cannot be removed")]
    HasChildren {
        /// The snapshot key.
        key: String,
        /// How many snapshots name it as parent.
        children: usize,
    },
    /// A snapshot key or name that cannot be stored (empty, or too long for a file name).
    #[error("invalid snapshot key `{key}`: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// The metadata file could not be parsed.
    #[error("corrupt snapshot metadata `{path}`: {reason}")]
    CorruptMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The overlay driver was requested but overlayfs cannot be mounted here.
    #[error("overlayfs is not usable on `{path}`: {reason}")]
    OverlayUnsupported {
        /// The state directory probed.
        path: PathBuf,
        /// Why the probe failed.
        reason: String,
    },
    /// The state directory's overlay snapshots keep their whiteout bookkeeping in
    /// `trusted.overlay.*` xattrs (made by root), which a user namespace cannot read.
    #[error(
        "snapshots in `{path}` were made by root (overlayfs with trusted xattrs) and cannot be \
         used from a user namespace (a rootless build): use another state directory (--root)"
    )]
    NeedsRealRoot {
        /// The snapshot directory.
        path: PathBuf,
    },
    /// Changing a file's owner failed because the id is not mapped in this user namespace.
    #[error("chown `{path}` to {uid}:{gid}: id not mapped in this user namespace; {hint}")]
    UnmappedId {
        /// The file.
        path: PathBuf,
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// What to do about it (the subordinate id files and the command that adds a range).
        hint: String,
    },
    /// A layer entry tried to reach outside the directory it is applied to.
    #[error("hostile layer entry `{entry}`: {reason}")]
    HostileEntry {
        /// The entry path as written in the tar stream.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A layer is malformed (bad header, unsupported entry type, bad compression).
    #[error("invalid layer entry `{entry}`: {reason}")]
    InvalidLayer {
        /// The entry path, or `<stream>` when the stream itself is bad.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A tree entry cannot be represented in a tar layer.
    #[error("cannot put `{path}` into a layer: {reason}")]
    Unrepresentable {
        /// The file on disk.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches an operation name and a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io {
            op,
            path: path.into(),
            source: e.into(),
        })
    }
}

/// Wraps a stream error.
pub(crate) fn stream(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Stream { op, source }
}
