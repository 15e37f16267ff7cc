//! Content digests (`sha256:<64 hex>`) and the hashing writer/reader that compute them while
//! bytes stream past. Only sha256 is accepted: it is what every registry and BuildKit use.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated content digest, always `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidDigest {
            digest: s.to_owned(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected `algorithm:hex`"))?;
        if alg != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("a sha256 digest has 64 lowercase hex digits"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The sha256 digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(data).into())
    }

    /// Wraps a raw sha256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// The hex part, as used for file names under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The algorithm part (`sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker images` shows an image id.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes (sha256) and counts everything written through it to an inner writer:
/// the one way kiln computes a diff_id or a blob digest while bytes stream past (the content
/// store's ingest, layer writers, the snapshotter's differ).
pub struct HashingWriter<W> {
    inner: W,
    /// `None` when only counting (the caller hashes the same bytes elsewhere).
    hasher: Option<Sha256>,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes and counts what goes to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            written: 0,
        }
    }

    /// Only counts (for a stream whose digest is known from another hash of the same bytes, as
    /// an uncompressed layer's digest is its diff_id).
    pub fn counting(inner: W) -> Self {
        Self {
            inner,
            hasher: None,
            written: 0,
        }
    }

    /// Returns the inner writer, the digest (`None` when only counting) and the byte count.
    pub fn finish(self) -> (W, Option<Digest>, u64) {
        (
            self.inner,
            self.hasher
                .map(|h| Digest::from_sha256(h.finalize().into())),
            self.written,
        )
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A sha256 computed on a thread of its own, fed buffers in order.
pub(crate) struct SideHash {
    tx: Option<Sender<Arc<Vec<u8>>>>,
    handle: Option<JoinHandle<(Sha256, u64)>>,
}

impl SideHash {
    /// Starts the thread; `depth` buffers may wait for it.
    pub(crate) fn start(depth: usize) -> Self {
        let (tx, rx) = bounded::<Arc<Vec<u8>>>(depth.max(1));
        let handle = std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut n = 0u64;
            for buf in rx {
                h.update(buf.as_slice());
                n += buf.len() as u64;
            }
            (h, n)
        });
        Self {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Hashes `buf` after the buffers given before.
    pub(crate) fn push(&self, buf: Arc<Vec<u8>>) -> io::Result<()> {
        self.tx
            .as_ref()
            .ok_or_else(|| io::Error::other("hash finished"))?
            .send(buf)
            .map_err(|_| io::Error::other("hashing thread died"))
    }

    /// The digest and length of everything pushed.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.tx = None;
        let (h, n) = self
            .handle
            .take()
            .ok_or_else(|| io::Error::other("hash finished"))?
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))?;
        Ok((Digest::from_sha256(h.finalize().into()), n))
    }
}

impl Drop for SideHash {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A reader that hashes (sha256) and counts everything read through it (the reading side of
/// [`HashingWriter`]: layer appliers, pulls).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: io::Read> HashingReader<R> {
    /// Hashes and counts what is read from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// The digest of the bytes read so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone().finalize().into())
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(d.short(), "e3b0c44298fc");
        for bad in [
            "sha256:abc",
            "md5:e3b0",
            "e3b0c442",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            let err = Digest::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn hashing_writer_matches() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!(buf, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d, Some(Digest::of_bytes(b"hello world")));
        let mut c = HashingWriter::counting(Vec::new());
        c.write_all(b"abc").unwrap();
        assert_eq!(c.finish(), (b"abc".to_vec(), None, 3));
    }
}
