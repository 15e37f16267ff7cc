//! Garbage collection of the content store: blobs no tag (and no caller-given root) reaches
//! are deleted. Reachability follows tags → indexes → manifests → configs and layers. The tag
//! lock is held throughout so no tag moves meanwhile, and blobs younger than a grace period are
//! kept, because another kiln process may have just written them for an image it has not
//! tagged yet (a pull stores blobs before the manifest and the tag).

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use crate::error::Result;
use crate::image::{media_type_of, parse_json};
use crate::spec::{self, Index, Manifest};
use crate::{ContentStore, Digest};

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub removed: Vec<Digest>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl ContentStore {
    /// Deletes every blob not reachable from a tag or from `extra_roots` (manifests, indexes or
    /// plain blobs the caller still needs, such as layers its build cache refers to), except
    /// blobs modified less than `grace` ago.
    pub fn collect_garbage(&self, extra_roots: &[Digest], grace: Duration) -> Result<GcReport> {
        let _lock = self.lock(true)?;
        let reachable = self.mark(extra_roots)?;
        let mut report = GcReport::default();
        for d in self.list_blobs()? {
            if reachable.contains(&d) {
                continue;
            }
            let young = self
                .blob_modified(&d)?
                .elapsed()
                .ok()
                .is_none_or(|age| age < grace);
            if young {
                continue;
            }
            // A deferred blob frees no space: only its record goes.
            let stored = self.stored_size(&d);
            self.remove_blob(&d)?;
            let _ = fs::remove_file(self.state_dir().join("content/sources").join(d.hex()));
            report.freed_bytes += stored;
            report.removed.push(d);
        }
        // Conversion records whose source or result is gone are stale.
        let converted = self.state_dir().join("content/converted");
        if let Ok(entries) = fs::read_dir(&converted) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let source = name
                    .split('.')
                    .next()
                    .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
                let target = fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| Digest::parse(t.trim()).ok());
                let alive = source.is_some_and(|s| self.has_blob(&s))
                    && target.is_some_and(|t| self.has_blob(&t));
                if !alive {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(report)
    }

    /// Every blob an image in the store reaches (tagged or dangling: indexes, manifests,
    /// configs and layers), at this moment.
    pub fn reachable_from_images(&self) -> Result<BTreeSet<Digest>> {
        let dangling: Vec<Digest> = self
            .list_dangling()?
            .into_iter()
            .map(|d| d.digest)
            .collect();
        let _lock = self.lock(false)?;
        self.mark(&dangling)
    }

    /// The blobs reachable from the tags and `extra_roots` (the caller holds the tag lock).
    fn mark(&self, extra_roots: &[Digest]) -> Result<BTreeSet<Digest>> {
        let mut reachable = BTreeSet::new();
        let mut stack: Vec<Digest> = self
            .load_tags()?
            .into_values()
            .chain(extra_roots.iter().cloned())
            .collect();
        while let Some(d) = stack.pop() {
            if !reachable.insert(d.clone()) {
                continue;
            }
            stack.extend(self.children(&d));
        }
        Ok(reachable)
    }

    /// The blobs a manifest or index names; nothing for other blobs (layers, configs).
    pub(crate) fn children(&self, d: &Digest) -> Vec<Digest> {
        // Only small JSON documents can be manifests; do not read layers (nor make deferred
        // ones: those are layers).
        if !self.blob_path(d).is_file() {
            return Vec::new();
        }
        let small = self.blob_size(d).is_ok_and(|s| s <= 4 * 1024 * 1024);
        if !small {
            return Vec::new();
        }
        let Ok(bytes) = self.read_blob(d) else {
            return Vec::new();
        };
        if bytes.first() != Some(&b'{') {
            return Vec::new();
        }
        let Ok(kind) = media_type_of(&bytes, "gc") else {
            return Vec::new();
        };
        if spec::is_index(&kind) {
            return parse_json::<Index>(&bytes, "gc")
                .map(|i| i.manifests.into_iter().map(|m| m.digest).collect())
                .unwrap_or_default();
        }
        if spec::is_manifest(&kind) {
            return parse_json::<Manifest>(&bytes, "gc")
                .map(|m| {
                    std::iter::once(m.config.digest)
                        .chain(m.layers.into_iter().map(|l| l.digest))
                        .collect()
                })
                .unwrap_or_default();
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::{CompressionOptions, ImageConfig, Platform, Reference, write_image};

    fn image(store: &ContentStore, content: &[u8]) -> crate::Image {
        let mut w = store.layer_writer(CompressionOptions::default()).unwrap();
        w.write_all(content).unwrap();
        let layer = w.finish().unwrap();
        let mut config = ImageConfig::new(&Platform::linux_amd64());
        config.rootfs.diff_ids.push(layer.diff_id);
        write_image(store, &config, &[layer.descriptor]).unwrap()
    }

    #[test]
    fn removes_only_unreachable_old_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let kept = image(&store, b"kept layer");
        let dropped = image(&store, b"dropped layer");
        let cached = image(&store, b"cache layer");
        store
            .set_tag(&Reference::parse("app:1").unwrap(), &kept.manifest_digest)
            .unwrap();
        // Young blobs survive whatever their reachability.
        assert!(
            store
                .collect_garbage(&[], Duration::from_secs(3600))
                .unwrap()
                .removed
                .is_empty()
        );
        let report = store
            .collect_garbage(&[cached.layers[0].digest.clone()], Duration::ZERO)
            .unwrap();
        for d in [
            &kept.manifest_digest,
            &kept.config_digest,
            &kept.layers[0].digest,
            &cached.layers[0].digest,
        ] {
            assert!(store.has_blob(d), "{d} is reachable");
        }
        for d in [
            &dropped.manifest_digest,
            &dropped.layers[0].digest,
            &cached.manifest_digest,
        ] {
            assert!(!store.has_blob(d), "{d} is garbage");
            assert!(report.removed.contains(d));
        }
        assert!(report.freed_bytes > 0);
        // The kept image still loads.
        crate::Image::resolve(
            &store,
            &Reference::parse("app:1").unwrap(),
            &Platform::linux_amd64(),
        )
        .unwrap();
    }
}
