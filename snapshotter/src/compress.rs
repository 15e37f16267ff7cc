//! Layer compression: the [`Compression`] choice, a streaming compressor for each (gzip through
//! flate2's zlib-rs backend, a pigz-style parallel gzip, zstd, none), the sha256-while-writing
//! sink used for diff_ids and blob digests, and magic-byte detection for the applier.
//!
//! Parallel gzip cuts the stream into 1 MiB blocks, deflates each independently on a worker
//! thread (raw deflate ending in a sync flush, the last one finished), and concatenates them in
//! order inside a single gzip member whose CRC-32 is computed over the input as it arrives. The
//! output is one ordinary gzip stream that any gunzip reads; memory is bounded by the number of
//! blocks in flight (two per worker).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use flate2::{Compress, FlushCompress};
use sha2::{Digest, Sha256};

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip on one thread, level 0–9.
    Gzip {
        /// Deflate level, 0–9 (6 is gzip's default).
        level: u32,
    },
    /// gzip on every core (pigz-style independent blocks), level 0–9.
    ParallelGzip {
        /// Deflate level, 0–9.
        level: u32,
    },
    /// zstd, level 1–22 (3 is the default).
    Zstd {
        /// zstd level.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } | Compression::ParallelGzip { .. } => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The compression a layer stream turned out to use, detected from its magic bytes by the
/// applier ([`crate::AppliedLayer::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

/// Detects the compression of a stream from its first bytes.
pub(crate) fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else {
        Detected::None
    }
}

/// A writer that hashes (sha256) and counts everything passing through to `inner`.
pub(crate) struct HashWriter<W: Write> {
    pub(crate) inner: W,
    /// `None` when only counting (an uncompressed blob's digest is its diff_id).
    hasher: Option<Sha256>,
    pub(crate) count: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// A writer that only counts bytes.
    pub(crate) fn counting(inner: W) -> Self {
        Self {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// `sha256:<hex>` of the bytes written (`None` when only counting), the byte count, and the
    /// inner writer.
    pub(crate) fn finish(self) -> (Option<String>, u64, W) {
        (
            self.hasher
                .map(|h| format!("sha256:{}", hex::encode(h.finalize()))),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A streaming compressor for one of the [`Compression`] choices.
pub(crate) enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Parallel(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(c: Compression, out: W) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::None(out),
            Compression::Gzip { level } => Compressor::Gzip(
                // No file name, mtime 0, OS "unknown": the same bytes everywhere.
                flate2::GzBuilder::new()
                    .operating_system(255)
                    .write(out, flate2::Compression::new(level.min(9))),
            ),
            Compression::ParallelGzip { level } => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                Compressor::Parallel(ParallelGzip::new(out, level.min(9), threads))
            }
            Compression::Zstd { level } => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(out, level)?)
            }
        })
    }

    /// Ends the compressed stream and returns the sink.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(e) => e.finish(),
            Compressor::Parallel(p) => p.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Parallel(p) => p.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::Parallel(p) => p.out.flush(),
            Compressor::Zstd(e) => e.flush(),
        }
    }
}

const BLOCK: usize = 1 << 20;

struct Job {
    data: Vec<u8>,
    last: bool,
    reply: Sender<io::Result<Vec<u8>>>,
}

/// pigz-style parallel gzip writer (see the module docs).
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    crc: flate2::Crc,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = bounded::<Job>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let rx: Receiver<Job> = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        let _ = job.reply.send(deflate_block(&job.data, level, job.last));
                    }
                })
            })
            .collect();
        Self {
            out,
            buf: Vec::with_capacity(BLOCK),
            crc: flate2::Crc::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: threads * 2,
            workers,
            header_written: false,
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            // gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown.
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.header_written = true;
        }
        let data = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { BLOCK }),
        );
        self.crc.update(&data);
        let (reply, rx) = bounded(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("parallel gzip finished"))?;
        jobs.send(Job { data, last, reply })
            .map_err(|_| io::Error::other("parallel gzip worker died"))?;
        self.pending.push_back(rx);
        while self.pending.len() >= self.max_pending {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let block = rx
                .recv()
                .map_err(|_| io::Error::other("parallel gzip worker died"))??;
            self.out.write_all(&block)?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        // `self` has no Drop impl, so the sink can be moved out.
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw-deflates one block; non-final blocks end with a sync flush (byte aligned, not final).
fn deflate_block(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let before_in = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let used = (c.total_in() - before_in) as usize;
        input = &input[used..];
        let done = match status {
            flate2::Status::StreamEnd => true,
            // A sync flush is complete once all input is consumed and space remained.
            _ => !last && input.is_empty() && out.capacity() > out.len(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut comp = Compressor::new(c, Vec::new()).unwrap();
        comp.write_all(data).unwrap();
        let out = comp.finish().unwrap();
        let mut back = Vec::new();
        match detect(&out) {
            Detected::Gzip => {
                flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut back)
                    .unwrap();
            }
            Detected::Zstd => {
                zstd::stream::read::Decoder::new(&out[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
            }
            Detected::None => back = out,
        }
        back
    }

    #[test]
    fn parallel_gzip_is_one_readable_gzip_stream() {
        let mut data = Vec::new();
        for i in 0..(3 * BLOCK + 12345) {
            data.push((i % 251) as u8 ^ (i / 7919) as u8);
        }
        // flate2's single-member GzDecoder must read all of it: one member, valid CRC.
        assert_eq!(
            roundtrip(Compression::ParallelGzip { level: 6 }, &data),
            data
        );
        assert_eq!(roundtrip(Compression::ParallelGzip { level: 1 }, b""), b"");
        assert_eq!(roundtrip(Compression::Gzip { level: 6 }, &data), data);
        assert_eq!(roundtrip(Compression::Zstd { level: 3 }, &data), data);
        assert_eq!(roundtrip(Compression::None, &data), data);
    }
}
