//! Deferred blobs: a layer a build kept only as a snapshot. The build hashed the layer tar as
//! it streamed it (its digest and size are known and recorded in images and cache records) but
//! wrote no blob; `content/deferred/<hex>` says how to make the bytes again (`<size>\n<source>`,
//! the source an opaque string for the store's [`BlobSource`]). The blob is written the first
//! time something reads it ([`ContentStore::open_blob`], [`ContentStore::materialize`]): an
//! export, a push, a cache export, a `FROM` of the image. The bytes made then go through the
//! ingest like any other blob and must hash to the recorded digest and size, so a snapshot that
//! changed (or a lying source) fails the read instead of storing a blob whose name lies.
//!
//! For the store, a deferred blob is present: [`ContentStore::has_blob`] and
//! [`ContentStore::blob_size`] answer from the record; [`ContentStore::list_blobs`] lists it and
//! [`ContentStore::remove_blob`] removes its record, so garbage collection treats it as any blob.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::ContentStore;
use crate::Digest;
use crate::error::{Error, IoContext, Result};
use crate::spec::Descriptor;

/// Makes the bytes of deferred blobs again (for kiln, from the snapshot a build step left).
pub trait BlobSource: Send + Sync {
    /// Writes the whole blob `source` describes (what [`ContentStore::defer_blob`] was given)
    /// to `out`. The store checks the bytes against the recorded digest and size.
    fn write_blob(&self, source: &str, out: &mut dyn Write) -> io::Result<()>;
}

/// The store's [`BlobSource`], if any (a slot so the store stays `Debug`).
#[derive(Clone, Default)]
pub(crate) struct SourceSlot(pub(crate) Option<Arc<dyn BlobSource>>);

impl fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BlobSource"
        } else {
            "none"
        })
    }
}

/// A deferred blob's record: its size and how to make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredBlob {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// What the [`BlobSource`] is given to make it.
    pub source: String,
}

/// Bytes handed from the source's thread to the reader at a time.
const CHUNK: usize = 1 << 20;

/// The reading end of [`ContentStore::read_deferred_unstored`].
pub struct DeferredReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl io::Read for DeferredReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The source's thread ended after its last chunk.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The source's end: bytes gathered into [`CHUNK`]s and sent.
struct ChunkSender {
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Ok(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader is gone"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Largest record read: a size and a snapshot name are a few hundred bytes.
const MAX_RECORD: u64 = 64 * 1024;

impl ContentStore {
    /// Sets what makes deferred blobs (see the module docs); without one, reading a deferred
    /// blob fails with [`Error::DeferredBlob`].
    #[must_use]
    pub fn with_blob_source(mut self, source: Arc<dyn BlobSource>) -> Self {
        self.source = SourceSlot(Some(source));
        self
    }

    pub(crate) fn deferred_path(&self, digest: &Digest) -> PathBuf {
        self.deferred.join(digest.hex())
    }

    /// Records that the blob `digest` of `size` bytes is not stored but can be made from
    /// `source` (by this store's [`BlobSource`]) when something reads it. Nothing is recorded
    /// when the blob is stored already; a record for the same digest is replaced.
    pub fn defer_blob(&self, digest: &Digest, size: u64, source: &str) -> Result<()> {
        if self.blob_path(digest).is_file() {
            return Ok(());
        }
        let dest = self.deferred_path(digest);
        let mut tmp = tempfile::NamedTempFile::with_prefix_in(".record-", &self.deferred)
            .at(&self.deferred)?;
        write!(tmp, "{size}\n{source}").at(tmp.path().to_path_buf())?;
        // Durable before anything names the digest (a cache record, an image manifest): a
        // tagged image must not lose a layer to a crash. Two small fsyncs, where writing the
        // blob cost the blob's bytes and the same two.
        tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
        tmp.persist(&dest).map_err(|e| Error::Io {
            path: dest,
            source: e.error,
        })?;
        super::sync_dir(&self.deferred)
    }

    /// The record of a deferred blob that is not stored (yet).
    pub fn deferred_blob(&self, digest: &Digest) -> Option<DeferredBlob> {
        if self.blob_path(digest).is_file() {
            return None;
        }
        let path = self.deferred_path(digest);
        let f = fs::File::open(&path).ok()?;
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(f, MAX_RECORD), &mut text).ok()?;
        let (size, source) = text.split_once('\n')?;
        Some(DeferredBlob {
            digest: digest.clone(),
            size: size.parse().ok()?,
            source: source.to_owned(),
        })
    }

    /// Every deferred blob not stored yet, sorted by digest.
    pub fn deferred_blobs(&self) -> Result<Vec<DeferredBlob>> {
        let mut out = Vec::new();
        for d in self.deferred_digests()? {
            if let Some(b) = self.deferred_blob(&d) {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Digests with a deferred record (stored or not).
    pub(crate) fn deferred_digests(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.deferred) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::Io {
                    path: self.deferred.clone(),
                    source: e,
                });
            }
        };
        for entry in entries {
            let entry = entry.at(&self.deferred)?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(d) = Digest::parse(&format!("sha256:{name}"))
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Streams the bytes of the deferred blob `rec` from the source without storing them (for
    /// a conversion that stores only its result, which checks what it was given).
    pub(crate) fn stream_deferred(
        &self,
        rec: &DeferredBlob,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match &self.source.0 {
            Some(source) => source.write_blob(&rec.source, out),
            None => Err(io::Error::other(format!(
                "layer {} is deferred and this store was opened without a source for deferred layers",
                rec.digest
            ))),
        }
    }

    /// The bytes of a deferred blob as its source makes them (on a thread of their own),
    /// neither stored nor verified: for a reader that checks them itself (an archive export
    /// hashes what it copies) or only needs figures (a layer's content size). `None` when
    /// `digest` is not deferred. A source's failure is the reader's error.
    pub fn read_deferred_unstored(&self, digest: &Digest) -> Option<DeferredReader> {
        let rec = self.deferred_blob(digest)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let store = self.clone();
        std::thread::spawn(move || {
            let mut w = ChunkSender {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let r = store.stream_deferred(&rec, &mut w).and_then(|()| w.send());
            if let Err(e) = r {
                // The reader may be gone already: nobody to tell.
                let _ = w.tx.send(Err(e));
            }
        });
        Some(DeferredReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        })
    }

    /// Reads a blob without storing anything: a stored blob's file, or a deferred blob's bytes
    /// as they are made ([`read_deferred_unstored`](Self::read_deferred_unstored)). Neither is
    /// verified here: for readers that hash what they read (an archive export, a layer applied
    /// against its diff_id) or only need figures.
    pub fn open_blob_unstored(&self, digest: &Digest) -> Result<Box<dyn io::Read + Send>> {
        match self.read_deferred_unstored(digest) {
            Some(r) => Ok(Box::new(r)),
            None => Ok(Box::new(self.open_blob(digest)?)),
        }
    }

    /// The bytes a blob takes on disk: its file's size, 0 for a deferred (unwritten) one.
    pub fn stored_size(&self, digest: &Digest) -> u64 {
        fs::metadata(self.blob_path(digest)).map_or(0, |m| m.len())
    }

    /// Writes the blob `digest` if it is deferred (a no-op when it is stored): the source's
    /// bytes through the ingest, checked against the recorded digest and size. Callers that
    /// use [`blob_path`](Self::blob_path) call this first; [`open_blob`](Self::open_blob) does.
    pub fn materialize(&self, digest: &Digest) -> Result<()> {
        if self.blob_path(digest).is_file() {
            return Ok(());
        }
        let Some(rec) = self.deferred_blob(digest) else {
            // Another process may have written it (and dropped the record) since the check.
            if self.blob_path(digest).is_file() {
                return Ok(());
            }
            return Err(Error::BlobNotFound {
                digest: digest.clone(),
            });
        };
        let Some(source) = &self.source.0 else {
            return Err(Error::DeferredBlob {
                digest: digest.clone(),
                reason: "this store was opened without a source for deferred layers".into(),
            });
        };
        let desc = Descriptor::new("", digest.clone(), rec.size);
        let what = format!("layer {digest} made again from {}", rec.source);
        let mut w = self.blob_writer()?.expect(&desc).named(what.clone());
        if let Err(e) = source.write_blob(&rec.source, &mut w) {
            return Err(w.overflow_error().unwrap_or(Error::DeferredBlob {
                digest: digest.clone(),
                reason: format!("{what}: {e}"),
            }));
        }
        w.flush().at(&what)?;
        w.commit(None)?;
        let _ = fs::remove_file(self.deferred_path(digest));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::{ImageConfig, Platform, Reference, write_image};

    /// Serves fixed bytes per source name and counts the calls.
    #[derive(Default)]
    struct Bytes {
        by_source: BTreeMap<String, Vec<u8>>,
        calls: Mutex<usize>,
    }

    impl BlobSource for Bytes {
        fn write_blob(&self, source: &str, out: &mut dyn Write) -> io::Result<()> {
            *self.calls.lock().unwrap() += 1;
            let b = self
                .by_source
                .get(source)
                .ok_or_else(|| io::Error::other(format!("no source {source}")))?;
            out.write_all(b)
        }
    }

    fn store_with(sources: &[(&str, &[u8])]) -> (tempfile::TempDir, ContentStore, Arc<Bytes>) {
        let dir = tempfile::tempdir().unwrap();
        let src = Arc::new(Bytes {
            by_source: sources
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
            calls: Mutex::new(0),
        });
        let store = ContentStore::open(dir.path())
            .unwrap()
            .with_blob_source(src.clone());
        (dir, store, src)
    }

    #[test]
    fn a_deferred_blob_is_present_and_written_when_first_read() {
        let (_dir, store, src) = store_with(&[("step-a", b"layer bytes")]);
        let d = Digest::of_bytes(b"layer bytes");
        store.defer_blob(&d, 11, "step-a").unwrap();
        assert!(store.has_blob(&d));
        assert!(
            !store.blob_path(&d).exists(),
            "nothing written at defer time"
        );
        assert_eq!(store.blob_size(&d).unwrap(), 11);
        assert_eq!(store.list_blobs().unwrap(), vec![d.clone()]);
        assert_eq!(store.deferred_blobs().unwrap()[0].source, "step-a");
        let mut unstored = Vec::new();
        io::Read::read_to_end(
            &mut store.read_deferred_unstored(&d).unwrap(),
            &mut unstored,
        )
        .unwrap();
        assert_eq!(unstored, b"layer bytes");
        assert!(
            !store.blob_path(&d).exists(),
            "an unstored read stores nothing"
        );
        assert_eq!(store.read_blob(&d).unwrap(), b"layer bytes");
        assert!(store.blob_path(&d).is_file());
        assert!(store.deferred_blobs().unwrap().is_empty(), "record gone");
        assert_eq!(store.read_blob(&d).unwrap(), b"layer bytes");
        assert_eq!(
            *src.calls.lock().unwrap(),
            2,
            "streamed once, then stored once"
        );
        assert!(
            store.read_deferred_unstored(&d).is_none(),
            "stored: not deferred"
        );
    }

    #[test]
    fn bytes_that_do_not_match_the_record_are_refused_and_nothing_is_stored() {
        let (_dir, store, _) =
            store_with(&[("changed", b"other bytes"), ("longer", b"layer bytes!!")]);
        let d = Digest::of_bytes(b"layer bytes");
        store.defer_blob(&d, 11, "changed").unwrap();
        let err = store.open_blob(&d).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.blob_path(&d).exists());
        assert!(store.deferred_blob(&d).is_some(), "the record stays");
        store.defer_blob(&d, 11, "longer").unwrap();
        let err = store.materialize(&d).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        store.defer_blob(&d, 11, "missing").unwrap();
        let err = store.materialize(&d).unwrap_err().to_string();
        assert!(err.contains("no source missing"), "{err}");
        assert!(!store.blob_path(&d).exists());
    }

    #[test]
    fn a_store_without_a_source_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"x");
        store.defer_blob(&d, 1, "step-a").unwrap();
        let err = store.open_blob(&d).unwrap_err().to_string();
        assert!(
            err.contains("without a source for deferred layers"),
            "{err}"
        );
    }

    #[test]
    fn garbage_collection_drops_unreferenced_records_and_never_makes_blobs() {
        let (_dir, store, src) = store_with(&[("kept", b"kept layer"), ("gone", b"gone layer")]);
        let kept = Digest::of_bytes(b"kept layer");
        let gone = Digest::of_bytes(b"gone layer");
        store.defer_blob(&kept, 10, "kept").unwrap();
        store.defer_blob(&gone, 10, "gone").unwrap();
        let mut config = ImageConfig::new(&Platform::linux_amd64());
        config.rootfs.diff_ids = vec![kept.clone()];
        let layer = Descriptor::new(crate::spec::media_type::OCI_LAYER, kept.clone(), 10);
        let image = write_image(&store, &config, &[layer]).unwrap();
        store
            .set_tag(&Reference::parse("app").unwrap(), &image.manifest_digest)
            .unwrap();
        let report = store.collect_garbage(&[], Duration::ZERO).unwrap();
        assert_eq!(report.removed, vec![gone.clone()]);
        assert_eq!(report.freed_bytes, 0);
        assert!(!store.has_blob(&gone));
        assert!(store.deferred_blob(&kept).is_some(), "still deferred");
        assert_eq!(*src.calls.lock().unwrap(), 0, "gc made no blob");
    }
}
