//! The [`Snapshotter`] trait (containerd's snapshotter model) and its value types: drivers,
//! kinds, metadata, usage and the on-disk layout the layer writer and applier read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::mount::Mount;

/// A store of filesystem snapshots, modelled on containerd's `snapshots.Snapshotter`.
///
/// # Lifecycle
///
/// A snapshot is identified by a *key* (a free-form string chosen by the caller). There are three
/// kinds:
///
/// - **Committed** snapshots are immutable filesystem states. They are made by [`commit`]ting an
///   active snapshot and may be the parent of other snapshots. An empty chain starts from
///   `parent = None`.
/// - **Active** snapshots are made by [`prepare`]: a writable filesystem on top of a committed
///   parent (or empty). `prepare` returns the [`Mount`]s that make it visible; mount them (with
///   [`crate::MountedSnapshot`] or [`crate::mount_all`]), change files, unmount, then
///   [`commit`] the active key under a new name. The active key ceases to exist on commit.
/// - **View** snapshots are made by [`view`]: a read-only mount of a committed parent, for
///   reading a snapshot's contents. Views cannot be committed; [`remove`] them when done.
///
/// ```text
///   prepare(a, None) ──mount, write, unmount──> commit(base, a)
///   prepare(b, Some(base)) ──> commit(step1, b)          view(v, Some(step1)) ──> remove(v)
/// ```
///
/// Parents chain: a committed snapshot cannot be removed while any snapshot names it as parent;
/// remove children first. [`mounts`] returns the mounts of an active or view snapshot again (and,
/// as a kiln extension, read-only mounts of a committed one). [`stat`] and [`usage`] inspect a
/// snapshot; [`walk`] lists all of them. [`layout`] exposes where the driver keeps the files, for
/// the layer writer and applier of this crate.
///
/// Keys and names share one namespace. Callers never mount a snapshot's directories themselves:
/// only the returned mounts are stable across drivers.
///
/// [`commit`]: Snapshotter::commit
/// [`prepare`]: Snapshotter::prepare
/// [`view`]: Snapshotter::view
/// [`remove`]: Snapshotter::remove
/// [`mounts`]: Snapshotter::mounts
/// [`stat`]: Snapshotter::stat
/// [`usage`]: Snapshotter::usage
/// [`walk`]: Snapshotter::walk
/// [`layout`]: Snapshotter::layout
pub trait Snapshotter: Send + Sync {
    /// Which driver stores the snapshots.
    fn driver(&self) -> Driver;
    /// Creates an active (writable) snapshot `key` on top of the committed `parent` and returns
    /// the mounts that make it visible.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// Creates a read-only view `key` of the committed `parent` and returns its mounts.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// The mounts of an existing snapshot (read-only ones for a committed snapshot).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the immutable committed snapshot `name`.
    fn commit(&self, name: &str, key: &str) -> Result<()>;
    /// Removes a snapshot that no other snapshot uses as parent.
    fn remove(&self, key: &str) -> Result<()>;
    /// Metadata of one snapshot.
    fn stat(&self, key: &str) -> Result<Info>;
    /// Disk space used by the snapshot itself (not its parents).
    fn usage(&self, key: &str) -> Result<Usage>;
    /// All snapshots, sorted by key.
    fn walk(&self) -> Result<Vec<Info>>;
    /// Where the driver keeps this snapshot's files (used by the layer writer and applier).
    fn layout(&self, key: &str) -> Result<Layout>;
    /// Why this store uses the native driver although it was left to choose
    /// ([`DriverChoice::Auto`]): the overlayfs probe's error when the state directory was
    /// made. `None` with overlayfs, or when native was asked for. Native copies every parent
    /// tree per step: callers report this so a slow build is never silent.
    fn native_fallback(&self) -> Option<&str> {
        None
    }
    /// The directory under which mount points of this store's snapshots belong (see
    /// [`crate::MountedSnapshot::new_in`]): `<state_dir>/mounts`. Mount points there that a dead
    /// process left are unmounted by the next [`open`](crate::open).
    fn mount_root(&self) -> &Path;
}

/// The storage driver behind a [`Snapshotter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// overlayfs: one upper dir per snapshot, parents as lower dirs.
    Overlay,
    /// A full directory tree per snapshot, copied (reflinked where possible) from its parent.
    Native,
}

impl Driver {
    /// The driver's name: `overlayfs` or `native`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }
}

/// Driver selection for [`open`](crate::open). In a user namespace (a rootless build) overlayfs is
/// mounted with `userxattr`; where that fails, `Auto` picks native.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// The driver the state directory already uses; for a new one overlayfs if a probe mount
    /// succeeds, native otherwise.
    #[default]
    Auto,
    /// overlayfs; fails if it cannot be mounted.
    Overlay,
    /// Directory copies.
    Native,
}

/// Kind of a snapshot (see the [`Snapshotter`] lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only, made by `view`.
    View,
    /// Immutable, made by `commit`.
    Committed,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// Metadata of a snapshot, as returned by [`Snapshotter::stat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (or committed name).
    pub name: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// The parent's name, `None` for a snapshot on an empty base.
    pub parent: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

/// Disk usage of a snapshot's own files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated on disk.
    pub size: u64,
    /// Number of inodes (files, directories, links, whiteouts).
    pub inodes: u64,
}

/// Where a driver keeps a snapshot's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// overlayfs: the snapshot's own changes live in `upper` (with overlay whiteouts); `lowers`
    /// are the parent chain, nearest first. A view has no upper: `upper` is then an empty dir.
    Overlay {
        /// The snapshot's upper directory.
        upper: PathBuf,
        /// The parents' directories, nearest parent first.
        lowers: Vec<PathBuf>,
        /// Whether opaque directories are marked with `user.overlay.opaque` (a state directory
        /// made in a user namespace, mounted with `userxattr`) rather than
        /// `trusted.overlay.opaque`.
        userxattr: bool,
    },
    /// native: `dir` is the complete tree; `parent` the parent's complete tree, if any.
    Native {
        /// The snapshot's tree.
        dir: PathBuf,
        /// The parent's tree.
        parent: Option<PathBuf>,
    },
}
