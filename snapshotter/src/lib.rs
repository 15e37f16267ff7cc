//! Snapshots of build-step filesystems (overlayfs and native drivers), and the conversion of
//! snapshot differences to OCI layers and back.
//!
//! - [`open`] gives a [`Snapshotter`] (containerd-style: prepare / view / commit / remove /
//!   stat / usage) over `<state_dir>/snapshots/`, driven by overlayfs or by directory copies.
//! - [`MountedSnapshot`] mounts a snapshot's [`Mount`]s on a temporary directory for as long as
//!   it lives ([`MountedSnapshot::new_in`] under the store's [`Snapshotter::mount_root`], where
//!   the next [`open`] finds what a killed process left mounted).
//! - [`Owner`] names the process (pid and start time) that made a temporary thing, so the next
//!   kiln process can tell it is orphaned ([`remove_orphans`], [`unmount_orphans`]).
//! - [`write_layer`] streams the changes of a snapshot as a reproducible OCI layer (tar,
//!   compressed per [`Compression`]) and returns its diff_id and digest; [`write_tree_layer`]
//!   does the same for a whole directory.
//! - [`apply_layer`] / [`apply_layer_to_snapshot`] unpack a layer, refusing entries that try to
//!   escape the target.
//!
//! ```no_run
//! use kiln_snapshotter::*;
//! # fn main() -> Result<()> {
//! let store = open(std::path::Path::new("/var/lib/kiln"), DriverChoice::Auto)?;
//! // Unpack a base image layer straight into a snapshot (no mount needed).
//! store.prepare("unpack", None)?;
//! let blob = std::fs::File::open("layer.tar.gz").unwrap();
//! let applied = apply_layer_to_snapshot(store.as_ref(), "unpack", std::io::BufReader::new(blob))?;
//! store.commit("base", "unpack")?;
//! // A build step: mount a writable snapshot, change it, commit, turn it into a layer.
//! let mounts = store.prepare("step", Some("base"))?;
//! let m = MountedSnapshot::new(&mounts)?;
//! std::fs::write(m.path().join("hello"), b"hi\n").unwrap();
//! m.unmount()?;
//! store.commit("step-1", "step")?;
//! let opts = LayerOptions {
//!     compression: CompressionOptions { compression: Compression::Zstd, level: Some(3) },
//!     source_date_epoch: None,
//! };
//! let info = write_layer(store.as_ref(), "step-1", &opts, std::io::sink())?;
//! println!("{} -> {} ({} bytes, {})", applied.diff_id, info.diff_id, info.size, info.media_type);
//! # Ok(()) }
//! ```

mod api;
mod apply;
mod error;
mod fsutil;
mod index;
mod layer;
mod mount;
mod native;
mod overlay;
mod owner;
mod settings;
mod snapshot;
mod tarwriter;

pub use apply::{AppliedLayer, apply_layer, apply_layer_to_snapshot};
pub use error::{Error, Result};
pub use kiln_image::{Compression, CompressionOptions};
pub use layer::{LayerInfo, LayerOptions, write_layer, write_layer_tar, write_tree_layer};
pub use mount::{Mount, MountedSnapshot, mount_all, unmount_all};
pub use owner::{Owner, remove_orphans, unmount_orphans};
pub use snapshot::{Driver, DriverChoice, Info, Kind, Layout, Snapshotter, Usage, open};
