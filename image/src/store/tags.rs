//! The tag table (`refs/tags.json`) and the pull sources of blobs (`content/sources/`).
//!
//! Tags (`docker.io/library/busybox:latest` → manifest digest) live in one JSON file replaced
//! atomically (temp + rename) while holding an exclusive `flock` on `refs/tags.lock`, so several
//! kiln processes can tag at once without losing updates. Readers take the shared lock.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

use tempfile::NamedTempFile;

use super::{ContentStore, sync_dir};
use crate::error::{Error, IoContext, Result};
use crate::{Digest, Reference};

impl ContentStore {
    /// Points the tag of `reference` (`name:tag`) at a manifest digest, replacing any old value.
    /// An image the tag moved off that no other tag names becomes dangling (`<none>`, see
    /// [`list_dangling`](Self::list_dangling)).
    pub fn set_tag(&self, reference: &Reference, manifest: &Digest) -> Result<()> {
        let key = tag_key(reference)?;
        let mut noted = Ok(());
        self.update_tags(|tags| {
            let old = tags.insert(key, manifest.clone());
            noted = self.note_retag(tags, old.as_ref(), manifest);
        })?;
        noted
    }

    /// The manifest digest a tag points at, if it exists.
    pub fn resolve_tag(&self, reference: &Reference) -> Result<Option<Digest>> {
        let key = tag_key(reference)?;
        Ok(self.read_tags()?.remove(&key))
    }

    /// All tags, sorted by name.
    pub fn list_tags(&self) -> Result<Vec<(Reference, Digest)>> {
        let tags = self.read_tags()?;
        Ok(tags
            .into_iter()
            .filter_map(|(k, d)| Reference::parse(&k).ok().map(|r| (r, d)))
            .collect())
    }

    /// Removes a tag, returning the digest it pointed at (`None` if there was no such tag).
    pub fn remove_tag(&self, reference: &Reference) -> Result<Option<Digest>> {
        let key = tag_key(reference)?;
        let mut removed = None;
        self.update_tags(|tags| removed = tags.remove(&key))?;
        Ok(removed)
    }

    /// Remembers that `digest` was pulled from `repository` on `registry`, so a later push to
    /// another repository of that registry can mount it instead of uploading it.
    pub fn record_source(&self, digest: &Digest, registry: &str, repository: &str) -> Result<()> {
        let dir = self.state_dir.join("content/sources");
        fs::create_dir_all(&dir).at(&dir)?;
        let line = format!("{registry}/{repository}");
        if self.sources(digest).contains(&line) {
            return Ok(());
        }
        let p = dir.join(digest.hex());
        // One short O_APPEND write per line: concurrent writers do not interleave.
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .at(&p)?;
        f.write_all(format!("{line}\n").as_bytes()).at(&p)
    }

    /// The `registry/repository` names `digest` is known to be in (see [`record_source`](Self::record_source)).
    pub fn sources(&self, digest: &Digest) -> Vec<String> {
        let p = self.state_dir.join("content/sources").join(digest.hex());
        fs::read_to_string(p)
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn tags_file(&self) -> PathBuf {
        self.refs.join("tags.json")
    }

    pub(crate) fn lock(&self, exclusive: bool) -> Result<File> {
        let p = self.refs.join("tags.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .at(&p)?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(|e| Error::Io {
            path: p,
            source: e.into(),
        })?;
        Ok(f)
    }

    pub(crate) fn load_tags(&self) -> Result<BTreeMap<String, Digest>> {
        let p = self.tags_file();
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| Error::Json {
                what: format!("tag table {}", p.display()),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    fn read_tags(&self) -> Result<BTreeMap<String, Digest>> {
        let _lock = self.lock(false)?;
        self.load_tags()
    }

    fn update_tags(&self, f: impl FnOnce(&mut BTreeMap<String, Digest>)) -> Result<()> {
        let _lock = self.lock(true)?;
        let mut tags = self.load_tags()?;
        let before = tags.clone();
        f(&mut tags);
        // Unchanged (a rebuild tagging the same image): no rewrite, no fsyncs.
        if tags == before {
            return Ok(());
        }
        let data = crate::json::to_canonical_json(&tags)?;
        let p = self.tags_file();
        let mut tmp = NamedTempFile::with_prefix_in(".tags-", &self.refs).at(&self.refs)?;
        tmp.write_all(&data).at(tmp.path().to_path_buf())?;
        tmp.as_file().sync_all().at(&p)?;
        tmp.persist(&p).map_err(|e| Error::Io {
            path: p.clone(),
            source: e.error,
        })?;
        sync_dir(&self.refs)
    }
}

fn tag_key(reference: &Reference) -> Result<String> {
    match reference.tag() {
        Some(tag) => Ok(format!("{}:{tag}", reference.name())),
        None => Err(Error::InvalidReference {
            reference: reference.to_string(),
            reason: "a tag is needed here, not only a digest".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_tag_to_what_it_is_writes_nothing() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let r = Reference::parse("app").unwrap();
        let d = Digest::of_bytes(b"m");
        store.set_tag(&r, &d).unwrap();
        let inode = || fs::metadata(store.tags_file()).unwrap().ino();
        let first = inode();
        store.set_tag(&r, &d).unwrap();
        assert_eq!(inode(), first, "the tags file was rewritten");
        assert_eq!(store.resolve_tag(&r).unwrap(), Some(d));
        let other = Digest::of_bytes(b"n");
        store.set_tag(&r, &other).unwrap();
        assert_ne!(inode(), first, "a changed tag is written");
        assert_eq!(store.resolve_tag(&r).unwrap(), Some(other));
    }

    #[test]
    fn tags_set_resolve_list_remove_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"m");
        std::thread::scope(|s| {
            for i in 0..8 {
                let store = store.clone();
                let d = d.clone();
                s.spawn(move || {
                    store
                        .set_tag(&Reference::parse(&format!("app:v{i}")).unwrap(), &d)
                        .unwrap();
                });
            }
        });
        let tags = store.list_tags().unwrap();
        assert_eq!(tags.len(), 8, "a concurrent update was lost: {tags:?}");
        let r = Reference::parse("app:v3").unwrap();
        assert_eq!(store.resolve_tag(&r).unwrap(), Some(d.clone()));
        assert_eq!(store.remove_tag(&r).unwrap(), Some(d));
        assert_eq!(store.resolve_tag(&r).unwrap(), None);
        let by_digest = Reference::parse(&format!("app@{}", Digest::of_bytes(b"x"))).unwrap();
        assert!(
            store
                .set_tag(&by_digest, &Digest::of_bytes(b"x"))
                .unwrap_err()
                .to_string()
                .contains("tag is needed")
        );
    }
}
