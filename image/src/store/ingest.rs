//! Ingest: how bytes become a blob.
//!
//! 1. [`ContentStore::blob_writer`] creates `content/ingest/<pid>-<starttime>-blob-<random>`
//!    (named after its [`Owner`], see [`crate::Owner`]) and holds an `flock` on it while writing.
//! 2. Every byte written is hashed (sha256) and counted; with an expectation
//!    ([`BlobWriter::expect`]) a write past the announced size fails at once, so a lying peer
//!    cannot fill the disk.
//! 3. [`BlobWriter::commit`] checks size and digest (against what the caller was told, never
//!    trusting it), fsyncs the file, renames it to `content/blobs/sha256/<hex>` and fsyncs the
//!    directory. Dropping the writer uncommitted removes the file.
//!
//! On [`ContentStore::open`], an ingest entry whose owner process is dead and whose lock is free
//! is removed (a killed writer's file: `kill -9` in the middle of a layer leaves nothing behind
//! after the next open), and so is an entry without an owner tag once it is a day old. A live
//! writer of another kiln process keeps its file: its owner is alive, or (in another pid
//! namespace) it still holds the lock.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use super::{ContentStore, Writeback, sync_dir};
use crate::compression::{CompressionOptions, Compressor};
use crate::error::{Error, IoContext, Result};
use crate::spec::Descriptor;
use crate::{Digest, HashingWriter, Owner};

impl ContentStore {
    /// Starts an ingest: a writer for a new blob whose digest is computed as bytes arrive.
    ///
    /// The bytes go to `content/ingest/<pid>-<starttime>-blob-<random>`, locked while this
    /// writer lives; [`BlobWriter::expect`] makes a write past the announced size fail;
    /// [`BlobWriter::commit`] verifies size and digest, fsyncs, renames the file to
    /// `content/blobs/sha256/<hex>` and fsyncs the directory. Dropped uncommitted, the file is
    /// removed; left by a killed process, the next [`ContentStore::open`] removes it.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        self.new_blob_writer(true)
    }

    /// `hash`: false when the caller hashes the very same bytes itself (an uncompressed
    /// layer's digest is its diff_id) and passes that digest to `commit_hashed`.
    fn new_blob_writer(&self, hash: bool) -> Result<BlobWriter> {
        let tmp = NamedTempFile::with_prefix_in(
            format!("{}-blob-", Owner::current().tag()),
            &self.ingest,
        )
        .at(&self.ingest)?;
        lock(tmp.as_file(), tmp.path())?;
        let buf = io::BufWriter::with_capacity(1 << 20, Writeback::new(tmp));
        Ok(BlobWriter {
            hasher: if hash {
                HashingWriter::new(buf)
            } else {
                HashingWriter::counting(buf)
            },
            store: self.clone(),
            what: "blob".to_owned(),
            expected: None,
            overflow: None,
        })
    }

    /// A writer that takes an uncompressed layer tar, computes its diff_id, compresses it as
    /// asked and stores the compressed blob (computing its digest on the way). gzip and zstd
    /// use [`compress_threads`](Self::compress_threads) threads, and both hashes run on
    /// threads of their own (uncompressed, one hash gives diff_id and digest).
    pub fn layer_writer(&self, compression: CompressionOptions) -> Result<LayerWriter> {
        let blob = self.new_blob_writer(false)?;
        let compressor =
            Compressor::hashing(blob, compression, self.compress_threads()).at(&self.ingest)?;
        Ok(LayerWriter {
            inner: compressor,
            compression,
        })
    }

    /// A new directory under `content/ingest/` for unpacking (an archive being loaded), owned
    /// by this process and removed on drop or, after a crash, by the next open.
    pub(crate) fn ingest_dir(&self, purpose: &str) -> Result<IngestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{purpose}-", Owner::current().tag()))
            .tempdir_in(&self.ingest)
            .at(&self.ingest)?;
        let lock_fd = File::open(dir.path()).at(dir.path())?;
        lock(&lock_fd, dir.path())?;
        Ok(IngestDir {
            dir,
            _lock: lock_fd,
        })
    }
}

/// A directory under `content/ingest/` (see [`ContentStore::ingest_dir`]).
pub(crate) struct IngestDir {
    dir: TempDir,
    _lock: File,
}

impl IngestDir {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn lock(f: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        Error::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Whether some process holds the ingest lock on `path`.
fn locked(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| {
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
    })
}

/// Removes what killed writers left: ingest entries of dead owners whose lock is free, entries
/// without an owner tag once a day old, and `.kiln-layer-<owner>-*` temp files of dead owners
/// that older kiln versions wrote straight into the blob directory.
pub(super) fn clean(ingest: &Path, blobs: &Path) {
    let day = std::time::Duration::from_secs(86_400);
    for e in fs::read_dir(ingest).into_iter().flatten().flatten() {
        let p = e.path();
        let stale = match e.file_name().to_str().and_then(Owner::from_tag) {
            Some(owner) => !owner.is_alive() && !locked(&p),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day),
        };
        if stale {
            remove_any(&p);
        }
    }
    for e in fs::read_dir(blobs).into_iter().flatten().flatten() {
        let name = e.file_name();
        if let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".kiln-layer-"))
            .and_then(Owner::from_tag)
            && !owner.is_alive()
        {
            remove_any(&e.path());
        }
    }
}

fn remove_any(p: &Path) {
    let _ = if p.is_dir() && !p.is_symlink() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
}

/// Checks what was received against what was announced.
pub(super) fn verify(
    what: &str,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    if let Some(exp) = expected_size
        && exp != size
    {
        return Err(Error::SizeMismatch {
            what: what.to_owned(),
            expected: exp,
            actual: size,
        });
    }
    if let Some(exp) = expected
        && exp != digest
    {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: exp.clone(),
            actual: digest.clone(),
        });
    }
    Ok(())
}

/// A new blob being written (an ingest): hashes as it goes, lands in the store on
/// [`commit`](Self::commit), and leaves nothing behind if dropped uncommitted.
pub struct BlobWriter {
    hasher: HashingWriter<io::BufWriter<Writeback<NamedTempFile>>>,
    store: ContentStore,
    what: String,
    expected: Option<(Digest, u64)>,
    /// Bytes offered when a write went past the expected size.
    overflow: Option<u64>,
}

impl BlobWriter {
    /// Expects exactly `desc` (digest and size): a write past its size fails, and
    /// [`commit`](Self::commit) checks both.
    #[must_use]
    pub fn expect(mut self, desc: &Descriptor) -> Self {
        self.expected = Some((desc.digest.clone(), desc.size));
        self
    }

    /// Names the blob in errors (`layer sha256:… of docker.io/library/busybox`).
    #[must_use]
    pub fn named(mut self, what: impl Into<String>) -> Self {
        self.what = what.into();
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.written()
    }

    /// The size mismatch, when a write went past the expected size.
    pub(crate) fn overflow_error(&self) -> Option<Error> {
        let (_, size) = self.expected.as_ref()?;
        self.overflow.map(|actual| Error::SizeMismatch {
            what: self.what.clone(),
            expected: *size,
            actual,
        })
    }

    /// Fsyncs and moves the blob into place, checking `expected` (and what
    /// [`expect`](Self::expect) was given) first. Returns digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buf, digest, size) = self.hasher.finish();
        let digest = digest.expect("blob_writer() hashes");
        Self::land(
            buf,
            &self.store,
            &self.what,
            self.expected,
            expected,
            digest,
            size,
        )
    }

    /// Like [`commit`](Self::commit) for a writer made by `new_blob_writer(false)`: `digest` is
    /// the hash of exactly the bytes written, computed by the caller.
    fn commit_hashed(self, digest: Digest) -> Result<(Digest, u64)> {
        let (buf, _, size) = self.hasher.finish();
        Self::land(
            buf,
            &self.store,
            &self.what,
            self.expected,
            None,
            digest,
            size,
        )
    }

    fn land(
        buf: io::BufWriter<Writeback<NamedTempFile>>,
        store: &ContentStore,
        what: &str,
        announced: Option<(Digest, u64)>,
        expected: Option<&Digest>,
        digest: Digest,
        size: u64,
    ) -> Result<(Digest, u64)> {
        let tmp = buf
            .into_inner()
            .map_err(|e| Error::Io {
                path: store.ingest.clone(),
                source: e.into_error(),
            })?
            .into_inner();
        if let Some((d, s)) = &announced {
            verify(what, Some(*s), Some(d), &digest, size)?;
        }
        verify(what, None, expected, &digest, size)?;
        let dest = store.blob_path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        sync_dir(&store.blobs)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((_, size)) = &self.expected {
            let offered = self.hasher.written() + buf.len() as u64;
            if offered > *size {
                self.overflow = Some(offered);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: more than the announced {size} bytes", self.what),
                ));
            }
        }
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
    inner: Compressor<BlobWriter>,
    compression: CompressionOptions,
}

impl LayerWriter {
    /// Finishes compression and commits the blob.
    pub fn finish(self) -> Result<Layer> {
        self.finish_checked(None)
    }

    /// Like [`finish`](Self::finish), but the uncompressed tar must hash to `diff_id` (`what`
    /// names the layer in the error); on mismatch nothing is stored.
    pub fn finish_expecting(self, diff_id: &Digest, what: &str) -> Result<Layer> {
        self.finish_checked(Some((diff_id, what)))
    }

    fn finish_checked(self, expected: Option<(&Digest, &str)>) -> Result<Layer> {
        let done = self.inner.finish_hashed().map_err(|source| Error::Io {
            path: PathBuf::from("layer"),
            source,
        })?;
        let diff_id = done.input_digest;
        let uncompressed_size = done.input_size;
        if let Some((want, what)) = expected
            && want != &diff_id
        {
            return Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: want.clone(),
                actual: diff_id,
            });
        }
        let (digest, size) = done.inner.commit_hashed(done.output_digest)?;
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
    use crate::compression::Compression;

    fn ingest_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.join("content/ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_removes_dead_owners_and_day_old_untagged_ingests_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let ingest = dir.path().join("content/ingest");
        // A killed writer: its owner (pid + start time) no longer runs.
        let dead = ingest.join("999999999-5-blob-abc");
        fs::write(&dead, b"partial").unwrap();
        let dead_dir = ingest.join("999999999-5-load-abc");
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("blob"), b"x").unwrap();
        // Untagged leftovers of older versions: removed once a day old.
        let old = ingest.join("blob-crashed");
        fs::write(&old, b"partial").unwrap();
        let two_days = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days)
            .unwrap();
        let fresh = ingest.join("blob-recent");
        fs::write(&fresh, b"being written").unwrap();
        // A writer of this (live) process, and a "dead" owner whose file is still locked (a
        // writer in another pid namespace).
        let mut live = store.blob_writer().unwrap();
        live.write_all(b"half").unwrap();
        let foreign = ingest.join("999999998-5-blob-ns");
        let held = File::create(&foreign).unwrap();
        lock(&held, &foreign).unwrap();
        // Legacy layer temp file straight in the blob directory.
        let legacy = store
            .blob_path(&Digest::of_bytes(b""))
            .with_file_name(".kiln-layer-999999999-5-x");
        fs::write(&legacy, b"partial layer").unwrap();

        let _again = ContentStore::open(dir.path()).unwrap();
        assert!(!dead.exists() && !dead_dir.exists() && !old.exists() && !legacy.exists());
        assert!(fresh.exists(), "an untagged file under a day old is kept");
        assert!(foreign.exists(), "a locked ingest is kept");
        let entries = ingest_entries(dir.path());
        let me = Owner::current().tag();
        assert_eq!(
            entries.iter().filter(|n| n.starts_with(&me)).count(),
            1,
            "{entries:?}"
        );
        drop(held);
        live.write_all(b" done").unwrap();
        let (d, n) = live.commit(None).unwrap();
        assert_eq!((d, n), (Digest::of_bytes(b"half done"), 9));
        let _ = ContentStore::open(dir.path()).unwrap();
        assert_eq!(ingest_entries(dir.path()), vec!["blob-recent".to_owned()]);
    }

    #[test]
    fn layer_writer_computes_diff_id_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let tar: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Uncompressed,
        ] {
            let mut w = store
                .layer_writer(CompressionOptions {
                    compression: c,
                    level: None,
                })
                .unwrap();
            w.write_all(&tar).unwrap();
            let layer = w.finish().unwrap();
            assert_eq!(layer.diff_id, Digest::of_bytes(&tar));
            assert_eq!(layer.uncompressed_size, tar.len() as u64);
            assert_eq!(layer.descriptor.media_type, c.layer_media_type(false));
            let blob = store.read_blob(&layer.descriptor.digest).unwrap();
            assert_eq!(blob.len() as u64, layer.descriptor.size);
            let mut back = Vec::new();
            io::Read::read_to_end(
                &mut crate::decompress(io::Cursor::new(blob)).unwrap(),
                &mut back,
            )
            .unwrap();
            assert_eq!(back, tar, "{c:?}");
        }
        assert_eq!(ingest_entries(dir.path()), Vec::<String>::new());
    }
}
