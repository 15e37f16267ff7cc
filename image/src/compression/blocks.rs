//! Parallel block compression with output that does not depend on the thread count.
//!
//! The input is cut into fixed blocks (whatever the sizes of the caller's writes), each
//! compressed on its own by a worker thread; the caller's thread writes the results in input
//! order. A block's bytes depend only on its input and the level, so 1, 2 or 16 threads give
//! identical output. Memory is bounded by the blocks in flight (two per worker).
//!
//! gzip (pigz style): 1 MiB blocks raw-deflated with a fresh dictionary, each ending in a sync
//! flush (byte aligned, not final) or, for the last block, the final deflate block; the worker
//! also computes the block's CRC-32. The output is one ordinary single-member gzip stream (header,
//! the blocks, CRC-32 combined from the blocks', input length) that `gzip -d` reads. A block
//! whose bytes are as good as random (order-0 entropy above 7.995 bits per byte: compressed
//! files, encrypted data) is written as stored deflate blocks instead: deflate cannot shrink
//! such data (its window is 32 KiB, and a repeat shorter than that lowers the entropy of a
//! 1 MiB block well below the bound), and searching it for matches is the most expensive thing
//! deflate does. The choice depends only on the block's bytes.
//!
//! zstd: 8 MiB blocks (the job size libzstd's own multi-threading uses at level 3), each one
//! complete zstd frame; a zstd stream may hold any number of frames and every decoder reads
//! them all. libzstd's multi-threaded mode is not used: its output changes with the number of
//! workers (measured: 64 MiB at level 3 with 1 and 2 workers gave other bytes).
//!
//! Asked to ([`Hashes`]), the writer also computes the sha256 of its input (a layer's diff_id)
//! and of its output (the blob's digest), each on a thread of its own that takes the blocks in
//! order: sha256 cannot be split, and on the caller's thread the two hashes were most of the
//! time a 256 MiB layer took to convert (measured: 38% of all samples, the caller's thread the
//! only one busy).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use flate2::{Compress, Crc, FlushCompress};

use crate::Digest;
use crate::digest::SideHash;

/// The gzip block size: part of the output format (changing it changes the bytes).
pub(super) const BLOCK: usize = 1 << 20;

/// The zstd block size (one frame each): part of the output format too.
pub(super) const ZSTD_BLOCK: usize = 8 << 20;

/// What each block becomes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Codec {
    /// Raw deflate inside one gzip member, at this level (0–9).
    Gzip(u32),
    /// One zstd frame per block, at this level (1–22).
    Zstd(i32),
}

impl Codec {
    fn block_size(self) -> usize {
        match self {
            Codec::Gzip(_) => BLOCK,
            Codec::Zstd(_) => ZSTD_BLOCK,
        }
    }
}

/// A worker's reusable compressor.
enum Engine {
    Deflate(Compress),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl Engine {
    fn new(codec: Codec) -> io::Result<Self> {
        Ok(match codec {
            Codec::Gzip(level) => {
                Engine::Deflate(Compress::new(flate2::Compression::new(level), false))
            }
            Codec::Zstd(level) => Engine::Zstd(zstd::bulk::Compressor::new(level)?),
        })
    }

    fn compress(&mut self, data: &[u8], last: bool) -> io::Result<Block> {
        match self {
            Engine::Deflate(c) => {
                let deflated = deflate_block(c, data, last);
                c.reset();
                let mut crc = Crc::new();
                crc.update(data);
                Ok(Block {
                    deflated: deflated?,
                    crc,
                    input: None,
                })
            }
            Engine::Zstd(z) => Ok(Block {
                deflated: z.compress(data)?,
                crc: Crc::new(),
                input: None,
            }),
        }
    }
}

struct Job {
    data: Arc<Vec<u8>>,
    last: bool,
    reply: Sender<io::Result<Block>>,
}

struct Block {
    deflated: Vec<u8>,
    crc: Crc,
    /// The input buffer, handed back for reuse (once the input hasher is done with it too).
    input: Option<Arc<Vec<u8>>>,
}

/// Which sha256 digests a [`ParallelBlocks`] computes besides compressing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hashes {
    /// The uncompressed input's.
    pub(super) input: bool,
    /// The compressed output's.
    pub(super) output: bool,
}

/// What [`ParallelBlocks::finish`] returns: the sink and the digests asked for (with the
/// length hashed).
pub(super) struct Finished<W> {
    pub(super) out: W,
    pub(super) input: Option<(Digest, u64)>,
    pub(super) output: Option<(Digest, u64)>,
}

/// The parallel block writer (see the module docs).
pub(super) struct ParallelBlocks<W: Write> {
    out: W,
    codec: Codec,
    block: usize,
    /// Blocks written so far (a zstd stream of no input still gets one empty frame).
    blocks: u64,
    buf: Vec<u8>,
    crc: Crc,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Block>>>,
    max_pending: usize,
    spare: Vec<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    header_written: bool,
    input_hash: Option<SideHash>,
    output_hash: Option<SideHash>,
}

impl<W: Write> ParallelBlocks<W> {
    pub(super) fn new(out: W, codec: Codec, threads: usize, hashes: Hashes) -> io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = bounded::<Job>(threads * 2);
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx: Receiver<Job> = rx.clone();
            let mut engine = Engine::new(codec)?;
            workers.push(std::thread::spawn(move || {
                for job in rx {
                    let r = engine.compress(&job.data, job.last).map(|mut b| {
                        b.input = Some(job.data);
                        b
                    });
                    let _ = job.reply.send(r);
                }
            }));
        }
        let block = codec.block_size();
        Ok(Self {
            out,
            codec,
            block,
            blocks: 0,
            buf: Vec::with_capacity(block),
            crc: Crc::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: threads * 2,
            spare: Vec::new(),
            workers,
            header_written: false,
            input_hash: hashes.input.then(|| SideHash::start(threads * 2 + 1)),
            output_hash: hashes.output.then(|| SideHash::start(threads * 2 + 1)),
        })
    }

    /// Writes `bytes` to the sink (and to the output hash).
    fn emit(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if let Some(h) = &self.output_hash {
            let bytes = Arc::new(bytes);
            self.out.write_all(&bytes)?;
            h.push(bytes)
        } else {
            self.out.write_all(&bytes)
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let gzip = matches!(self.codec, Codec::Gzip(_));
        if gzip && !self.header_written {
            // gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown.
            self.emit(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.header_written = true;
        }
        // A zstd stream needs no closing block, except as its only frame.
        if !gzip && last && self.buf.is_empty() && self.blocks > 0 {
            return Ok(());
        }
        self.blocks += 1;
        let next = if last {
            Vec::new()
        } else {
            let block = self.block;
            self.spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(block))
        };
        let data = Arc::new(std::mem::replace(&mut self.buf, next));
        if let Some(h) = &self.input_hash {
            h.push(Arc::clone(&data))?;
        }
        let (reply, rx) = bounded(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("parallel gzip finished"))?;
        jobs.send(Job { data, last, reply })
            .map_err(|_| io::Error::other("parallel compressor worker died"))?;
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
                .map_err(|_| io::Error::other("parallel compressor worker died"))??;
            self.crc.combine(&block.crc);
            self.emit(block.deflated)?;
            // The input hasher may still hold the buffer: then it is dropped, not reused.
            if let Some(mut input) = block.input.and_then(|a| Arc::try_unwrap(a).ok())
                && input.capacity() >= self.block
            {
                input.clear();
                self.spare.push(input);
            }
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> io::Result<Finished<W>> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if matches!(self.codec, Codec::Gzip(_)) {
            let mut trailer = [0u8; 8];
            trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
            trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
            self.emit(trailer.to_vec())?;
        }
        self.out.flush()?;
        let input = self.input_hash.take().map(SideHash::finish).transpose()?;
        let output = self.output_hash.take().map(SideHash::finish).transpose()?;
        // `self` has no Drop impl, so the sink can be moved out.
        Ok(Finished {
            out: self.out,
            input,
            output,
        })
    }
}

impl<W: Write> Write for ParallelBlocks<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.block - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == self.block {
            self.submit(false)?;
        }
        Ok(n)
    }
    /// Blocks are fixed: a flush writes nothing early (that would change the bytes).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Entropy (bits per byte) above which a block is stored, not deflated.
const STORE_ENTROPY: f64 = 7.995;

/// The order-0 entropy of `data` in bits per byte.
fn entropy(data: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// `data` as stored deflate blocks (the last one final when `last`), byte aligned.
fn store_block(data: &[u8], last: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    let mut out = Vec::with_capacity(data.len() + chunks.len() * 5);
    for (i, chunk) in chunks.iter().enumerate() {
        let final_block = last && i + 1 == chunks.len();
        // BFINAL, BTYPE 00 (stored), padding to the byte, then LEN and its complement.
        out.push(u8::from(final_block));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Raw-deflates one block; a non-final block ends with a sync flush (byte aligned, not final).
fn deflate_block(c: &mut Compress, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    if data.len() >= 64 * 1024 && entropy(data) > STORE_ENTROPY {
        return Ok(store_block(data, last));
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 1024);
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

    fn xorshift(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn random_blocks_are_stored_and_repeats_are_deflated() {
        let random = xorshift(BLOCK, 7);
        assert!(entropy(&random) > STORE_ENTROPY);
        // A 16 KiB random pattern repeated: as random byte for byte, but deflate's window sees
        // the repeats, and the entropy bound keeps it deflated.
        let pattern = xorshift(16 * 1024, 9);
        let repeated: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK).collect();
        assert!(entropy(&repeated) < STORE_ENTROPY, "{}", entropy(&repeated));
        for (data, max) in [(&random, BLOCK + BLOCK / 1000), (&repeated, BLOCK / 20)] {
            let mut two = data.clone();
            two.extend_from_slice(b"tail");
            let mut w =
                ParallelBlocks::new(Vec::new(), Codec::Gzip(6), 2, Hashes::default()).unwrap();
            w.write_all(&two).unwrap();
            let gz = w.finish().unwrap().out;
            assert!(gz.len() < max + 100, "{} bytes", gz.len());
            assert!(gunzip(&gz) == two);
        }
        assert_eq!(store_block(b"", true), [1, 0, 0, 0xff, 0xff]);
    }
}
