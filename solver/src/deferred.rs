//! Layers kept as snapshots: a build step's layer is hashed as it is streamed from the step's
//! snapshot, and only a record of it goes into the content store (`defer_blob`). The blob is
//! written from the snapshot (the same walk, so the same bytes, checked against the digest)
//! when an export, push, cache export or `FROM` first reads it. This module is the store's
//! [`BlobSource`] for those records, and what `kiln prune` does before a snapshot that still
//! makes a needed layer goes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_image::{BlobSource, ContentStore};
use kiln_snapshotter::{self as snap, Snapshotter};

use crate::error::Result;
use crate::solve::img_err;

/// The deferred-blob source string of the layer of `snapshot` written with mtimes clamped to
/// `epoch`: `step-<hex>` or `step-<hex> epoch=<seconds>`.
pub(crate) fn source_of(snapshot: &str, epoch: Option<i64>) -> String {
    match epoch {
        Some(e) => format!("{snapshot} epoch={e}"),
        None => snapshot.to_owned(),
    }
}

/// The snapshot and epoch of a [`source_of`] string.
pub(crate) fn parse_source(source: &str) -> Option<(&str, Option<i64>)> {
    match source.split_once(' ') {
        None if !source.is_empty() => Some((source, None)),
        None => None,
        Some((name, epoch)) => Some((name, Some(epoch.strip_prefix("epoch=")?.parse().ok()?))),
    }
}

/// Writes deferred layers from the snapshots of a state directory.
pub(crate) struct SnapshotLayers {
    state_dir: PathBuf,
    /// The snapshotter: the solver's own, or opened on first use (CLI image commands).
    snapshotter: OnceLock<std::result::Result<Arc<dyn Snapshotter>, String>>,
}

impl SnapshotLayers {
    /// A source over an open snapshotter.
    pub(crate) fn over(state_dir: &Path, snapshotter: Arc<dyn Snapshotter>) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(Ok(snapshotter));
        Self {
            state_dir: state_dir.to_path_buf(),
            snapshotter: cell,
        }
    }

    fn snapshotter(&self) -> io::Result<&Arc<dyn Snapshotter>> {
        self.snapshotter
            .get_or_init(|| {
                snap::open(&self.state_dir, snap::DriverChoice::Auto)
                    .map(Arc::from)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| io::Error::other(format!("open the snapshots: {e}")))
    }
}

impl BlobSource for SnapshotLayers {
    fn write_blob(&self, source: &str, out: &mut dyn Write) -> io::Result<()> {
        let (name, epoch) = parse_source(source)
            .ok_or_else(|| io::Error::other(format!("not a layer source: `{source}`")))?;
        // Not hashed here: the store checks the bytes against the recorded digest.
        snap::write_layer_tar(self.snapshotter()?.as_ref(), name, epoch, out)
            .map_err(|e| io::Error::other(format!("layer of snapshot {name}: {e}")))?;
        Ok(())
    }
}

/// Opens the content store of `state_dir` with the layers builds deferred made (when first
/// read) from the build's snapshots: how the CLI's image commands (`push`, `save`, `tag`...)
/// and embedders outside a build open it.
pub fn open_content_store(state_dir: &Path) -> Result<ContentStore> {
    let store = ContentStore::open(state_dir).map_err(img_err("content store"))?;
    Ok(store.with_blob_source(Arc::new(SnapshotLayers {
        state_dir: state_dir.to_path_buf(),
        snapshotter: OnceLock::new(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip() {
        assert_eq!(
            parse_source(&source_of("step-ab", None)),
            Some(("step-ab", None))
        );
        assert_eq!(
            parse_source(&source_of("step-ab", Some(-5))),
            Some(("step-ab", Some(-5)))
        );
        assert_eq!(parse_source(""), None);
        assert_eq!(parse_source("step-ab when=1"), None);
    }
}
