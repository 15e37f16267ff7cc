//! Dangling images: an image a tag moved off (a rebuild under the same tag) that no other tag
//! names, listed by `kiln images` as `<none>` (docker's dangling images) until removed with its
//! blobs by [`ContentStore::remove_image`] (`kiln image prune`, `kiln rmi ID`).
//!
//! The set lives in `<state>/refs/dangling.json` (manifest digest → unix time it became
//! dangling), updated under the tag lock by [`ContentStore::set_tag`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use crate::error::{Error, IoContext, Result};
use crate::{ContentStore, Digest};

/// An image no tag names any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DanglingImage {
    /// Its manifest (or index) digest.
    pub digest: Digest,
    /// Unix time (seconds) its last tag moved off it.
    pub since: i64,
}

/// What [`ContentStore::remove_image`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovedImage {
    /// The blobs deleted (manifest, config and layers no other image or root uses).
    pub blobs: Vec<Digest>,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl ContentStore {
    fn dangling_file(&self) -> PathBuf {
        self.state_dir().join("refs/dangling.json")
    }

    fn load_dangling(&self) -> Result<BTreeMap<Digest, i64>> {
        let p = self.dangling_file();
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| Error::Json {
                what: format!("dangling image table {}", p.display()),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    fn store_dangling(&self, set: &BTreeMap<Digest, i64>) -> Result<()> {
        let p = self.dangling_file();
        let dir = p.parent().map(PathBuf::from).unwrap_or_default();
        let data = crate::json::to_canonical_json(set)?;
        let mut tmp = NamedTempFile::with_prefix_in(".dangling-", &dir).at(&dir)?;
        tmp.write_all(&data).at(tmp.path().to_path_buf())?;
        tmp.persist(&p).map_err(|e| Error::Io {
            path: p.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Called with the tag lock held, after a tag moved from `old` to `new` in `tags`: `old`
    /// becomes dangling when no tag names it any more; `new` is no longer dangling.
    pub(crate) fn note_retag(
        &self,
        tags: &BTreeMap<String, Digest>,
        old: Option<&Digest>,
        new: &Digest,
    ) -> Result<()> {
        let mut set = self.load_dangling()?;
        let mut changed = set.remove(new).is_some();
        if let Some(old) = old
            && old != new
            && !tags.values().any(|d| d == old)
            && self.has_blob(old)
            // A pull tags the platform manifest, then its index: not dangling.
            && !self.children(new).contains(old)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            set.insert(old.clone(), now);
            changed = true;
        }
        if changed {
            self.store_dangling(&set)?;
        }
        Ok(())
    }

    /// The dangling images whose manifest is still in the store, oldest first.
    pub fn list_dangling(&self) -> Result<Vec<DanglingImage>> {
        let _lock = self.lock(false)?;
        let mut out: Vec<DanglingImage> = self
            .load_dangling()?
            .into_iter()
            .filter(|(d, _)| self.has_blob(d))
            .map(|(digest, since)| DanglingImage { digest, since })
            .collect();
        out.sort_by_key(|d| d.since);
        Ok(out)
    }

    /// Deletes the image `manifest` (which no tag may name): drops it from the dangling set
    /// and deletes its manifest, config and layer blobs, except those another tagged or
    /// dangling image, or one of `keep` (blobs the caller still needs, e.g. layers of build
    /// cache records, walked like tags), uses.
    pub fn remove_image(&self, manifest: &Digest, keep: &[Digest]) -> Result<RemovedImage> {
        let _lock = self.lock(true)?;
        let tags = self.load_tags()?;
        if let Some((name, _)) = tags.iter().find(|(_, d)| *d == manifest) {
            return Err(Error::InvalidImage {
                what: manifest.to_string(),
                reason: format!("the image is tagged as {name}"),
            });
        }
        let mut dangling = self.load_dangling()?;
        dangling.remove(manifest);
        let used = self.reach(
            tags.values()
                .chain(dangling.keys())
                .chain(keep.iter())
                .cloned(),
        );
        let mine = self.reach(std::iter::once(manifest.clone()));
        let mut report = RemovedImage::default();
        for d in mine.difference(&used) {
            // A deferred layer (never written) frees nothing.
            let size = self.stored_size(d);
            if self.has_blob(d) {
                self.remove_blob(d)?;
                let _ = fs::remove_file(self.state_dir().join("content/sources").join(d.hex()));
                report.bytes += size;
                report.blobs.push(d.clone());
            }
        }
        self.store_dangling(&dangling)?;
        Ok(report)
    }

    /// Every blob reachable from `roots` (indexes → manifests → configs and layers).
    fn reach(&self, roots: impl Iterator<Item = Digest>) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Digest> = roots.collect();
        while let Some(d) = stack.pop() {
            if seen.insert(d.clone()) {
                stack.extend(self.children(&d));
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::{CompressionOptions, ImageConfig, Platform, Reference, write_image};

    fn image(store: &ContentStore, layers: &[&[u8]]) -> crate::Image {
        let mut config = ImageConfig::new(&Platform::linux_amd64());
        let mut descs = Vec::new();
        for content in layers {
            let mut w = store.layer_writer(CompressionOptions::default()).unwrap();
            w.write_all(content).unwrap();
            let layer = w.finish().unwrap();
            config.rootfs.diff_ids.push(layer.diff_id);
            descs.push(layer.descriptor);
        }
        write_image(store, &config, &descs).unwrap()
    }

    #[test]
    fn a_moved_tag_leaves_a_dangling_image_whose_own_blobs_removal_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let app = Reference::parse("app:1").unwrap();
        let old = image(&store, &[b"base", b"old"]);
        let new = image(&store, &[b"base", b"new"]);
        store.set_tag(&app, &old.manifest_digest).unwrap();
        assert!(store.list_dangling().unwrap().is_empty());
        // Another tag on the old image: moving app:1 does not make it dangling.
        let other = Reference::parse("app:other").unwrap();
        store.set_tag(&other, &old.manifest_digest).unwrap();
        store.set_tag(&app, &new.manifest_digest).unwrap();
        assert!(store.list_dangling().unwrap().is_empty());
        store.remove_tag(&other).unwrap();
        store.set_tag(&other, &new.manifest_digest).unwrap();
        store.set_tag(&app, &old.manifest_digest).unwrap();
        store.set_tag(&app, &new.manifest_digest).unwrap();
        let dangling = store.list_dangling().unwrap();
        assert_eq!(dangling.len(), 1);
        assert_eq!(dangling[0].digest, old.manifest_digest);
        // Tagged images cannot be removed this way.
        assert!(store.remove_image(&new.manifest_digest, &[]).is_err());
        let removed = store.remove_image(&old.manifest_digest, &[]).unwrap();
        for d in [
            &old.manifest_digest,
            &old.config_digest,
            &old.layers[1].digest,
        ] {
            assert!(!store.has_blob(d), "{d} only the old image used");
            assert!(removed.blobs.contains(d));
        }
        // The shared base layer and the new image stay.
        assert!(store.has_blob(&old.layers[0].digest));
        assert_eq!(old.layers[0].digest, new.layers[0].digest);
        crate::Image::resolve(&store, &app, &Platform::linux_amd64()).unwrap();
        assert!(removed.bytes > 0);
        assert!(store.list_dangling().unwrap().is_empty());
    }

    #[test]
    fn kept_roots_survive_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let app = Reference::parse("app:1").unwrap();
        let old = image(&store, &[b"cached"]);
        let new = image(&store, &[b"new"]);
        store.set_tag(&app, &old.manifest_digest).unwrap();
        store.set_tag(&app, &new.manifest_digest).unwrap();
        let removed = store
            .remove_image(&old.manifest_digest, &[old.layers[0].digest.clone()])
            .unwrap();
        assert!(store.has_blob(&old.layers[0].digest));
        assert!(!store.has_blob(&old.manifest_digest));
        assert!(!removed.blobs.contains(&old.layers[0].digest));
    }
}
