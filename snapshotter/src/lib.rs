//! Snapshots of build-step filesystems (overlayfs and native drivers), and the conversion of
//! snapshot differences to OCI layers and back.
//!
//! - [`open`] gives a [`Snapshotter`] (containerd-style: prepare / view / commit / remove /
//!   stat / usage) over `<state_dir>/snapshots/`, driven by overlayfs or by directory copies.
//! - [`MountedSnapshot`] mounts a snapshot's [`Mount`]s on a temporary directory for as long as
//!   it lives.
//! - [`write_layer`] streams the changes of a snapshot as a reproducible OCI layer (tar,
//!   compressed per [`Compression`]) and returns its diff_id and digest; [`write_tree_layer`]
//!   does the same for a whole directory.
//! - [`apply_layer`] / [`apply_layer_to_snapshot`] unpack a layer, refusing entries that try to
//!   escape the target.

mod apply;
mod compress;
mod error;
mod fsutil;
mod layer;
mod mount;
mod native;
mod overlay;
mod snapshot;
mod tarwriter;

pub use apply::{AppliedLayer, apply_layer, apply_layer_to_snapshot};
pub use compress::{Compression, Detected};
pub use error::{Error, Result};
pub use layer::{LayerInfo, LayerOptions, write_layer, write_tree_layer};
pub use mount::{Mount, MountedSnapshot, mount_all, unmount_all};
pub use snapshot::{Driver, DriverChoice, Info, Kind, Layout, Snapshotter, Usage, open};
