//! Layer compression, the one stack of the workspace: the choice (`gzip`, `zstd`,
//! `uncompressed` and a level), the matching media types, detection of what a blob actually
//! holds, and the streaming (de)compressors every layer writer uses (the content store's
//! [`LayerWriter`](crate::LayerWriter), the snapshotter's differ, exports and pushes).
//!
//! Both compressors use several cores and give the same bytes for a given level whatever the
//! thread count: the stream is cut into fixed blocks compressed independently in parallel
//! (gzip pigz style in 1 MiB blocks inside one gzip member, zstd as one frame per 8 MiB block;
//! see `blocks.rs`).

mod blocks;

use std::io::{self, BufRead, BufReader, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::Digest;
use crate::error::{Error, Result};
use crate::spec::media_type as mt;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    Uncompressed,
    /// gzip (the default, as in BuildKit).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}

/// A compression and its level (`None` = the algorithm's default: gzip 6, zstd 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CompressionOptions {
    /// The algorithm.
    pub compression: Compression,
    /// The level.
    pub level: Option<i32>,
}

impl Compression {
    /// Parses `gzip`, `zstd` or `uncompressed` (the `compression=` export option).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            "uncompressed" | "none" => Ok(Self::Uncompressed),
            other => Err(Error::InvalidOption(format!(
                "unknown compression `{other}` (expected gzip, zstd or uncompressed)"
            ))),
        }
    }

    /// The layer media type for this compression, OCI or Docker flavoured.
    pub fn layer_media_type(self, docker: bool) -> &'static str {
        match (self, docker) {
            (Self::Uncompressed, false) => mt::OCI_LAYER,
            (Self::Gzip, false) => mt::OCI_LAYER_GZIP,
            (Self::Zstd, false) => mt::OCI_LAYER_ZSTD,
            (Self::Uncompressed, true) => mt::DOCKER_LAYER,
            (Self::Gzip, true) => mt::DOCKER_LAYER_GZIP,
            (Self::Zstd, true) => mt::DOCKER_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type announces, or `None` if it is not a layer type kiln
    /// knows.
    pub fn from_layer_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            mt::OCI_LAYER | mt::DOCKER_LAYER => Some(Self::Uncompressed),
            mt::OCI_LAYER_GZIP
            | mt::DOCKER_LAYER_GZIP
            | mt::OCI_LAYER_NONDIST_GZIP
            | mt::DOCKER_FOREIGN_LAYER_GZIP => Some(Self::Gzip),
            mt::OCI_LAYER_ZSTD | mt::DOCKER_LAYER_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }

    /// Guesses the compression from the first bytes of a blob (gzip and zstd magic numbers).
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::Uncompressed
        }
    }

    /// The name as written in options.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uncompressed => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// Wraps `r` so that reading yields the uncompressed tar, whatever the blob's compression
/// (detected from its magic bytes, so a mislabelled blob still reads).
pub fn decompress(r: impl Read + Send + 'static) -> io::Result<Box<dyn Read + Send>> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let head = r.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::Uncompressed => Box::new(r),
    })
}

/// How many threads a [`Compressor`] uses when not told: one per core. (The library reads no
/// environment; the `kiln` command maps `KILN_COMPRESS_THREADS` onto
/// [`ContentStore::with_compress_threads`](crate::ContentStore::with_compress_threads).) The
/// output does not depend on it.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A streaming compressor writing to `W` (see the module docs: parallel, and the same bytes for
/// any thread count).
pub struct Compressor<W: Write>(Inner<W>);

enum Inner<W: Write> {
    /// Uncompressed; the input hash, when asked for, is computed inline (it is the output's).
    Plain(W, Option<Sha256>, u64),
    Blocks(blocks::ParallelBlocks<W>),
}

/// What [`Compressor::finish_hashed`] returns.
#[derive(Debug)]
pub struct Compressed<W> {
    /// The inner writer.
    pub inner: W,
    /// sha256 of the uncompressed input (a layer's diff_id).
    pub input_digest: Digest,
    /// Bytes of input.
    pub input_size: u64,
    /// sha256 of the compressed output (the blob's digest); equal to `input_digest` when
    /// uncompressed.
    pub output_digest: Digest,
    /// Bytes of output.
    pub output_size: u64,
}

impl<W: Write> Compressor<W> {
    /// A compressor using [`default_threads`] threads.
    pub fn new(w: W, opts: CompressionOptions) -> io::Result<Self> {
        Self::with_threads(w, opts, default_threads())
    }

    /// A compressor using `threads` threads (at least one) besides the caller's.
    pub fn with_threads(w: W, opts: CompressionOptions, threads: usize) -> io::Result<Self> {
        Self::build(w, opts, threads, blocks::Hashes::default())
    }

    /// Like [`with_threads`](Self::with_threads), and hashing (sha256) both the input and the
    /// output on threads of their own, for [`finish_hashed`](Self::finish_hashed): a layer's
    /// diff_id and its blob's digest without a hash on the caller's thread.
    pub fn hashing(w: W, opts: CompressionOptions, threads: usize) -> io::Result<Self> {
        let both = blocks::Hashes {
            input: true,
            output: true,
        };
        Self::build(w, opts, threads, both)
    }

    fn build(
        w: W,
        opts: CompressionOptions,
        threads: usize,
        hashes: blocks::Hashes,
    ) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(Self(match opts.compression {
            Compression::Uncompressed => Inner::Plain(w, hashes.input.then(Sha256::new), 0),
            Compression::Gzip => {
                let level = opts.level.map_or(6, |l| l.clamp(0, 9)) as u32;
                Inner::Blocks(blocks::ParallelBlocks::new(
                    w,
                    blocks::Codec::Gzip(level),
                    threads,
                    hashes,
                )?)
            }
            Compression::Zstd => {
                let level = opts.level.unwrap_or(3).clamp(1, 22);
                Inner::Blocks(blocks::ParallelBlocks::new(
                    w,
                    blocks::Codec::Zstd(level),
                    threads,
                    hashes,
                )?)
            }
        }))
    }

    /// Flushes the compressed trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Inner::Plain(w, ..) => Ok(w),
            Inner::Blocks(e) => e.finish().map(|f| f.out),
        }
    }

    /// Like [`finish`](Self::finish), with the digests of a compressor made by
    /// [`hashing`](Self::hashing) (an error for one that was not).
    pub fn finish_hashed(self) -> io::Result<Compressed<W>> {
        let not_hashing = || io::Error::other("compressor made without hashing");
        match self.0 {
            Inner::Plain(inner, hash, n) => {
                let d = Digest::from_sha256(hash.ok_or_else(not_hashing)?.finalize().into());
                Ok(Compressed {
                    inner,
                    input_digest: d.clone(),
                    input_size: n,
                    output_digest: d,
                    output_size: n,
                })
            }
            Inner::Blocks(e) => {
                let f = e.finish()?;
                let ((input_digest, input_size), (output_digest, output_size)) =
                    f.input.zip(f.output).ok_or_else(not_hashing)?;
                Ok(Compressed {
                    inner: f.out,
                    input_digest,
                    input_size,
                    output_digest,
                    output_size,
                })
            }
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Plain(w, hash, count) => {
                let n = w.write(buf)?;
                if let Some(h) = hash {
                    h.update(&buf[..n]);
                }
                *count += n as u64;
                Ok(n)
            }
            Inner::Blocks(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::Plain(w, ..) => w.flush(),
            Inner::Blocks(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half pseudo-random, half text, like a real layer.
    fn sample(len: usize) -> Vec<u8> {
        kiln_testkit::layer_like_bytes(len, 0x9e37_79b9)
    }

    fn compress(data: &[u8], compression: Compression, level: i32, threads: usize) -> Vec<u8> {
        let opts = CompressionOptions {
            compression,
            level: Some(level),
        };
        let mut c = Compressor::with_threads(Vec::new(), opts, threads).unwrap();
        // Odd write sizes: block boundaries must not depend on how the caller writes.
        for chunk in data.chunks(70_001) {
            c.write_all(chunk).unwrap();
        }
        c.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_every_thread_count() {
        // Over several gzip blocks and several zstd frames (libzstd's own multi-threading
        // failed this at 64 MiB).
        let data = sample(20 * 1024 * 1024 + 12_345);
        for (c, level) in [
            (Compression::Gzip, 6),
            (Compression::Gzip, 1),
            (Compression::Zstd, 3),
        ] {
            let one = compress(&data, c, level, 1);
            assert!(one.len() < data.len() * 3 / 4, "{c:?} did not compress");
            for threads in [2, 4] {
                assert!(
                    compress(&data, c, level, threads) == one,
                    "{c:?} level {level}: {threads} threads gave other bytes than 1"
                );
            }
            // Hashing on side threads changes nothing either, and gives both digests.
            let opts = CompressionOptions {
                compression: c,
                level: Some(level),
            };
            let mut h = Compressor::hashing(Vec::new(), opts, 3).unwrap();
            for chunk in data.chunks(1 << 20) {
                h.write_all(chunk).unwrap();
            }
            let done = h.finish_hashed().unwrap();
            assert!(
                done.inner == one,
                "{c:?}: a hashing compressor gave other bytes"
            );
            assert_eq!(done.input_digest, Digest::of_bytes(&data));
            assert_eq!(done.input_size, data.len() as u64);
            assert_eq!(done.output_digest, Digest::of_bytes(&one));
            assert_eq!(done.output_size, one.len() as u64);
            let mut back = Vec::new();
            decompress(io::Cursor::new(one))
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{c:?} round trip");
        }
    }

    #[test]
    fn gzip_output_is_read_by_gzip_d() {
        if !kiln_testkit::require_tool("gzip_output_is_read_by_gzip_d", "gzip", "gzip") {
            return;
        }
        let data = sample(3 * 1024 * 1024 + 7);
        let gz = compress(&data, Compression::Gzip, 6, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("layer.tar.gz");
        std::fs::write(&p, &gz).unwrap();
        // -t checks the CRC and length trailer; -dc gives back the input.
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&p)
            .status()
            .unwrap();
        assert!(t.success());
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout == data, "gzip -d gave other bytes");
        // An empty stream is a valid gzip file too.
        let empty = compress(b"", Compression::Gzip, 6, 2);
        std::fs::write(&p, &empty).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.is_empty());
    }

    #[test]
    fn round_trips_every_compression() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            let mut comp = Compressor::with_threads(
                Vec::new(),
                CompressionOptions {
                    compression: c,
                    level: Some(1),
                },
                2,
            )
            .unwrap();
            comp.write_all(&data).unwrap();
            let blob = comp.finish().unwrap();
            assert_eq!(Compression::detect(&blob), c);
            let mut out = Vec::new();
            decompress(io::Cursor::new(blob))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
        // No input is still one valid (empty) stream.
        for c in [Compression::Gzip, Compression::Zstd] {
            let empty = compress(b"", c, 3, 2);
            assert_eq!(Compression::detect(&empty), c);
            let mut out = Vec::new();
            decompress(io::Cursor::new(empty))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out.is_empty(), "{c:?}");
        }
        assert!(
            Compression::parse("lz4")
                .unwrap_err()
                .to_string()
                .contains("`lz4`")
        );
        assert_eq!(
            Compression::from_layer_media_type(mt::DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_layer_media_type("application/x-foo"),
            None
        );
    }
}
