//! Layer compression: the choice (`gzip`, `zstd`, `uncompressed` and a level), the matching
//! media types, detection of what a blob actually holds, and streaming (de)compressors.

use std::io::{self, BufRead, BufReader, Read, Write};

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

/// A streaming compressor writing to `W`.
pub(crate) enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(w: W, opts: CompressionOptions) -> io::Result<Self> {
        Ok(match opts.compression {
            Compression::Uncompressed => Self::Plain(w),
            Compression::Gzip => {
                let level = opts.level.map_or(6, |l| l.clamp(0, 9)) as u32;
                Self::Gzip(flate2::write::GzEncoder::new(
                    w,
                    flate2::Compression::new(level),
                ))
            }
            Compression::Zstd => {
                let level = opts.level.unwrap_or(3).clamp(1, 22);
                Self::Zstd(zstd::stream::write::Encoder::new(w, level)?)
            }
        })
    }

    /// Flushes the compressed trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_compression() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            let mut comp = Compressor::new(
                Vec::new(),
                CompressionOptions {
                    compression: c,
                    level: Some(1),
                },
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
