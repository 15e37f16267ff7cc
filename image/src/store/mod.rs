//! The content store under a state directory: blobs addressed by digest in
//! `content/blobs/sha256/<hex>` and tags in `refs/tags.json`.
//!
//! Every blob enters through an ingest ([`ContentStore::blob_writer`], see `ingest.rs`
//! for the lifecycle): a locked temp file under `content/ingest/` named after its owner process,
//! hashed while written, verified, fsynced and renamed into place. A crash leaves at most an
//! ingest file of a dead owner, which the next [`ContentStore::open`] removes; never a blob
//! whose name lies about its content. Two processes writing the same blob both rename identical
//! bytes onto the same name, which is harmless.
//!
//! Layout under the state directory:
//! - `content/blobs/sha256/<hex>`: blobs (layers, configs, manifests, indexes);
//! - `content/ingest/<pid>-<starttime>-<purpose>-<random>`: temp files and directories of
//!   writers in flight;
//! - `content/converted/<hex>.<compression>.<level>`: "this layer recompressed is that blob";
//! - `content/sources/<hex>`: `registry/repository` lines a blob was pulled from (for mounts);
//! - `content/deferred/<hex>`: blobs not written yet, made when first read (see `deferred.rs`);
//! - `refs/tags.json` + `refs/tags.lock`: the tag table (see `tags.rs`).

mod deferred;
mod ingest;
mod tags;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use deferred::{BlobSource, DeferredBlob, DeferredReader};
pub use ingest::{BlobWriter, Layer, LayerWriter};

use crate::Digest;
use crate::error::{Error, IoContext, Result};
use crate::spec::Descriptor;

/// The content-addressed blob store and tag table of one state directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    state_dir: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    refs: PathBuf,
    /// `content/deferred/`: records of blobs made when first read.
    deferred: PathBuf,
    /// What makes deferred blobs.
    source: deferred::SourceSlot,
    /// Threads of the layer compressors (0: one per core).
    compress_threads: usize,
}

impl ContentStore {
    /// Opens (creating if needed) the store in `state_dir`, removing what killed writers left
    /// in `content/ingest/`.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self> {
        let state_dir = state_dir.as_ref().to_path_buf();
        let blobs = state_dir.join("content/blobs/sha256");
        let ingest = state_dir.join("content/ingest");
        let refs = state_dir.join("refs");
        let deferred = state_dir.join("content/deferred");
        for d in [&blobs, &ingest, &refs, &deferred] {
            fs::create_dir_all(d).at(d)?;
        }
        ingest::clean(&ingest, &blobs);
        Ok(Self {
            state_dir,
            blobs,
            ingest,
            refs,
            deferred,
            source: deferred::SourceSlot::default(),
            compress_threads: 0,
        })
    }

    /// Sets how many threads the layer compressors ([`layer_writer`](Self::layer_writer),
    /// conversions for exports and pushes) use; 0 (the default) is one per core. The
    /// compressed bytes are the same for any count.
    #[must_use]
    pub fn with_compress_threads(mut self, threads: usize) -> Self {
        self.compress_threads = threads;
        self
    }

    /// The compressor thread count (see [`with_compress_threads`](Self::with_compress_threads)).
    pub fn compress_threads(&self) -> usize {
        if self.compress_threads == 0 {
            crate::default_threads()
        } else {
            self.compress_threads
        }
    }

    /// The state directory this store lives in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is present: stored, or deferred (made when first read).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file() || self.deferred_path(digest).is_file()
    }

    /// The size of a stored (or deferred) blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self
                .deferred_blob(digest)
                .map(|d| d.size)
                .ok_or_else(|| Error::BlobNotFound {
                    digest: digest.clone(),
                }),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Opens a blob for streaming, writing it first if it is deferred. The bytes are not
    /// verified; use [`read_blob`](Self::read_blob) for small documents or hash while reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.materialize(digest)?;
                File::open(&p).at(p)
            }
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
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
    /// names `what` in errors. The copy stops as soon as more bytes arrive than `desc` says.
    pub fn put_verified(&self, mut reader: impl Read, desc: &Descriptor, what: &str) -> Result<()> {
        let mut w = self.blob_writer()?.expect(desc).named(what);
        if let Err(source) = io::copy(&mut reader, &mut w) {
            return Err(w.overflow_error().unwrap_or(Error::Io {
                path: PathBuf::from(what),
                source,
            }));
        }
        w.commit(None).map(|_| ())
    }

    /// Moves a file (on the store's filesystem, inside an ingest directory of this store) into the
    /// store after checking it against `desc`; falls back to copying across filesystems.
    pub(crate) fn adopt_file(&self, path: &Path, desc: &Descriptor, what: &str) -> Result<()> {
        let dest = self.blob_path(&desc.digest);
        if dest.is_file() {
            return Ok(());
        }
        let mut f = File::open(path).at(path)?;
        let mut hasher = crate::HashingWriter::new(io::sink());
        io::copy(&mut f, &mut hasher).at(path)?;
        let (_, digest, size) = hasher.finish();
        let digest = digest.expect("a hashing writer hashes");
        ingest::verify(what, Some(desc.size), Some(&desc.digest), &digest, size)?;
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

    /// Removes a blob, stored or deferred (no error if it is absent).
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        for p in [self.deferred_path(digest), self.blob_path(digest)] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::Io { path: p, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// When a blob (or a deferred blob's record) was last written.
    pub(crate) fn blob_modified(&self, digest: &Digest) -> Result<std::time::SystemTime> {
        let p = self.blob_path(digest);
        let meta = match fs::metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let d = self.deferred_path(digest);
                fs::metadata(&d).at(d)?
            }
            r => r.at(p)?,
        };
        meta.modified().at(self.blob_path(digest))
    }

    /// Every stored or deferred blob's digest.
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
        out.extend(self.deferred_digests()?);
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A file writer that starts the write-back of what it wrote every 8 MiB
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for it), so that the fsync
/// that ends a big blob or export waits for its last few MiB instead of all of it (measured:
/// 50–60 ms for a 135 MB blob on an idle disk, the cores idle meanwhile).
pub(crate) struct Writeback<F: std::os::fd::AsFd> {
    file: F,
    written: u64,
    started: u64,
}

impl<F: std::os::fd::AsFd> Writeback<F> {
    const STEP: u64 = 8 << 20;

    pub(crate) fn new(file: F) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
        }
    }

    pub(crate) fn into_inner(self) -> F {
        self.file
    }
}

impl<F: std::os::fd::AsFd> Write for Writeback<F>
where
    for<'a> &'a F: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= Self::STEP {
            use std::os::fd::AsRawFd as _;
            let (start, len) = (self.started, self.written - self.started);
            // SAFETY: a plain system call on a file descriptor we own for the call; it only
            // starts write-back (a failure is harmless: the final fsync still syncs all).
            unsafe {
                libc::sync_file_range(
                    self.file.as_fd().as_raw_fd(),
                    start as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&self.file).flush()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn put_verified_stops_at_the_announced_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = vec![7u8; 100_000];
        let desc = Descriptor::new("application/octet-stream", Digest::of_bytes(&data), 10);
        // An endless body must not fill the disk: the copy stops past the announced size.
        let err = store
            .put_verified(io::repeat(7), &desc, "blob from a liar")
            .unwrap_err();
        assert!(
            matches!(err, Error::SizeMismatch { expected: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("blob from a liar"), "{err}");
        assert!(!store.has_blob(&desc.digest));
        let ok = Descriptor::new("application/octet-stream", Digest::of_bytes(&data), 100_000);
        store.put_verified(&data[..], &ok, "blob").unwrap();
        assert_eq!(store.read_blob(&ok.digest).unwrap(), data);
    }
}
