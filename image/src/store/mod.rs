//! The content store under a state directory: blobs addressed by digest in
//! `content/blobs/sha256/<hex>` and tags in `refs/tags.json`.
//!
//! Lifecycle of a blob: bytes stream into a temp file under `content/ingest/` while being
//! hashed; the temp file is fsynced, its digest checked against the expected one (if any), then
//! renamed into place and the directory fsynced. A crash leaves at most a stray temp file, never
//! a blob whose name lies about its content. Two processes writing the same blob both rename
//! identical bytes onto the same name, which is harmless.
//!
//! Tags (`docker.io/library/busybox:latest` → manifest digest) live in one JSON file replaced
//! atomically (temp + rename) while holding an exclusive `flock` on `refs/tags.lock`, so several
//! kiln processes can tag at once without losing updates. Readers take the shared lock.
//!
//! Layout under the state directory:
//! - `content/blobs/sha256/<hex>`: blobs (layers, configs, manifests, indexes);
//! - `content/ingest/`: temp files of writers in flight (leftovers older than a day are
//!   removed on open, so a crash at any point leaves nothing that grows forever);
//! - `content/converted/<hex>.<compression>.<level>`: "this layer recompressed is that blob";
//! - `content/sources/<hex>`: `registry/repository` lines a blob was pulled from (for mounts);
//! - `refs/tags.json` + `refs/tags.lock`: the tag table.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::compression::{CompressionOptions, Compressor};
use crate::digest::HashingWriter;
use crate::error::{Error, IoContext, Result};
use crate::spec::Descriptor;
use crate::{Digest, Reference};

/// The content-addressed blob store and tag table of one state directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    state_dir: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    refs: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self> {
        let state_dir = state_dir.as_ref().to_path_buf();
        let blobs = state_dir.join("content/blobs/sha256");
        let ingest = state_dir.join("content/ingest");
        let refs = state_dir.join("refs");
        for d in [&blobs, &ingest, &refs] {
            fs::create_dir_all(d).at(d)?;
        }
        clean_ingest(&ingest);
        Ok(Self {
            state_dir,
            blobs,
            ingest,
            refs,
        })
    }

    /// The state directory this store lives in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Opens a blob for streaming. The bytes are not verified; use [`read_blob`](Self::read_blob)
    /// for small documents or hash while reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound {
                    digest: digest.clone(),
                }
            } else {
                Error::Io { path: p, source: e }
            }
        })
    }

    /// Reads a whole blob and verifies it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .at(self.blob_path(digest))?;
        let actual = Digest::of_bytes(&data);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", self.blob_path(digest).display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Stores bytes, returning their digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(data);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).at(&self.ingest)?;
        w.commit(Some(&digest))?;
        Ok(digest)
    }

    /// Streams `reader` into the store. With `expected`, the content must hash to it (and the
    /// blob is not written on mismatch). Returns the digest and size.
    pub fn put_blob(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        io::copy(&mut reader, &mut w).at(&self.ingest)?;
        w.commit(expected)
    }

    /// Like [`put_blob`](Self::put_blob) but checks the full descriptor (digest and size) and
    /// names `what` in errors.
    pub fn put_verified(&self, reader: impl Read, desc: &Descriptor, what: &str) -> Result<()> {
        let mut w = self.blob_writer()?;
        what.clone_into(&mut w.what);
        w.expected_size = Some(desc.size);
        let mut reader = reader;
        io::copy(&mut reader, &mut w).map_err(|source| Error::Io {
            path: PathBuf::from(what),
            source,
        })?;
        w.commit(Some(&desc.digest)).map(|_| ())
    }

    /// Moves a file (on the store's filesystem, e.g. unpacked under `content/ingest/`) into the
    /// store after checking it against `desc`; falls back to copying across filesystems.
    pub(crate) fn adopt_file(&self, path: &Path, desc: &Descriptor, what: &str) -> Result<()> {
        let dest = self.blob_path(&desc.digest);
        if dest.is_file() {
            return Ok(());
        }
        let mut f = File::open(path).at(path)?;
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut f, &mut hasher).at(path)?;
        let (_, digest, size) = hasher.finish();
        if size != desc.size {
            return Err(Error::SizeMismatch {
                what: what.to_owned(),
                expected: desc.size,
                actual: size,
            });
        }
        if digest != desc.digest {
            return Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: desc.digest.clone(),
                actual: digest,
            });
        }
        f.sync_all().at(path)?;
        match fs::rename(path, &dest) {
            Ok(()) => sync_dir(&self.blobs),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                self.put_verified(File::open(path).at(path)?, desc, what)
            }
            Err(e) => Err(Error::Io {
                path: dest,
                source: e,
            }),
        }
    }

    /// A writer for a new blob whose digest is computed as bytes arrive.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = NamedTempFile::with_prefix_in("blob-", &self.ingest).at(&self.ingest)?;
        Ok(BlobWriter {
            hasher: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, tmp)),
            store: self.clone(),
            what: "blob".to_owned(),
            expected_size: None,
        })
    }

    /// A writer that takes an uncompressed layer tar, computes its diff_id, compresses it as
    /// asked and stores the compressed blob (computing its digest on the way).
    pub fn layer_writer(&self, compression: CompressionOptions) -> Result<LayerWriter> {
        let blob = self.blob_writer()?;
        let compressor = Compressor::new(blob, compression).at(&self.ingest)?;
        Ok(LayerWriter {
            inner: HashingWriter::new(compressor),
            compression,
        })
    }

    /// Removes a blob (no error if it is absent).
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io { path: p, source: e }),
            _ => Ok(()),
        }
    }

    /// Every stored blob's digest.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).at(&self.blobs)? {
            let entry = entry.at(&self.blobs)?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(d) = Digest::parse(&format!("sha256:{name}"))
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

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
        f(&mut tags);
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

/// Removes what crashed writers left in `content/ingest/` (temp blobs, unpacked archives) once
/// it is a day old, so no live writer of another process loses its file.
fn clean_ingest(ingest: &Path) {
    let Ok(entries) = fs::read_dir(ingest) else {
        return;
    };
    let day = std::time::Duration::from_secs(86_400);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// A new blob being written: hashes as it goes, lands in the store on [`commit`](Self::commit),
/// and leaves nothing behind if dropped uncommitted.
pub struct BlobWriter {
    hasher: HashingWriter<io::BufWriter<NamedTempFile>>,
    store: ContentStore,
    what: String,
    expected_size: Option<u64>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.written()
    }

    /// Fsyncs and moves the blob into place, checking `expected` first. Returns digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buf, digest, size) = self.hasher.finish();
        let tmp = buf.into_inner().map_err(|e| Error::Io {
            path: self.store.ingest.clone(),
            source: e.into_error(),
        })?;
        if let Some(exp) = self.expected_size
            && exp != size
        {
            return Err(Error::SizeMismatch {
                what: self.what,
                expected: exp,
                actual: size,
            });
        }
        if let Some(exp) = expected
            && exp != &digest
        {
            return Err(Error::DigestMismatch {
                what: self.what,
                expected: exp.clone(),
                actual: digest,
            });
        }
        let dest = self.store.blob_path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        sync_dir(&self.store.blobs)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.hasher.flush()
    }
}

/// The result of writing a layer: its descriptor (compressed digest, size, media type) and its
/// diff_id (the digest of the uncompressed tar, for the config's `rootfs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The stored blob (OCI media type for its compression).
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Takes an uncompressed layer tar (for example from the snapshotter's differ) and stores it
/// compressed; see [`ContentStore::layer_writer`].
pub struct LayerWriter {
    inner: HashingWriter<Compressor<BlobWriter>>,
    compression: CompressionOptions,
}

impl LayerWriter {
    /// Finishes compression and commits the blob.
    pub fn finish(self) -> Result<Layer> {
        let (compressor, diff_id, uncompressed_size) = self.inner.finish();
        let blob = compressor.finish().map_err(|source| Error::Io {
            path: PathBuf::from("layer"),
            source,
        })?;
        let (digest, size) = blob.commit(None)?;
        let descriptor = Descriptor::new(
            self.compression.compression.layer_media_type(false),
            digest,
            size,
        );
        Ok(Layer {
            descriptor,
            diff_id,
            uncompressed_size,
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compression;

    #[test]
    fn blobs_are_verified_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert!(
            store
                .blob_path(&d)
                .ends_with(format!("content/blobs/sha256/{}", d.hex()))
        );
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert_eq!(store.blob_size(&d).unwrap(), 5);

        let wrong = Digest::of_bytes(b"other");
        let err = store
            .put_blob(&b"hello!"[..], Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digest mismatch") && err.contains(wrong.as_str()),
            "{err}"
        );
        assert!(!store.has_blob(&wrong));
        assert_eq!(
            fs::read_dir(dir.path().join("content/ingest"))
                .unwrap()
                .count(),
            0,
            "temp file left behind"
        );

        // A blob corrupted on disk is detected on read.
        fs::write(store.blob_path(&d), b"hellO").unwrap();
        let err = store.read_blob(&d).unwrap_err().to_string();
        assert!(
            err.contains("digest mismatch") && err.contains(d.as_str()),
            "{err}"
        );
        assert!(matches!(
            store.read_blob(&wrong),
            Err(Error::BlobNotFound { .. })
        ));
        assert_eq!(store.list_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn open_cleans_day_old_ingest_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let ingest = dir.path().join("content/ingest");
        let old = ingest.join("blob-crashed");
        fs::write(&old, b"partial").unwrap();
        let two_days = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days)
            .unwrap();
        let fresh = ingest.join("blob-live");
        fs::write(&fresh, b"being written").unwrap();
        drop(store);
        let _store = ContentStore::open(dir.path()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists(), "a live writer's file is kept");
    }

    #[test]
    fn layer_writer_computes_diff_id_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let tar: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let mut w = store
            .layer_writer(CompressionOptions {
                compression: Compression::Zstd,
                level: None,
            })
            .unwrap();
        w.write_all(&tar).unwrap();
        let layer = w.finish().unwrap();
        assert_eq!(layer.diff_id, Digest::of_bytes(&tar));
        assert_eq!(layer.uncompressed_size, tar.len() as u64);
        assert_eq!(
            layer.descriptor.media_type,
            crate::media_type::OCI_LAYER_ZSTD
        );
        let blob = store.read_blob(&layer.descriptor.digest).unwrap();
        assert_eq!(blob.len() as u64, layer.descriptor.size);
        assert_eq!(zstd::decode_all(&blob[..]).unwrap(), tar);
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
