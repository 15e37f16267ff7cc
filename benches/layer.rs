//! Layer throughput: a 256 MiB tree (half random bytes, half text) written as a layer through
//! each compressor, and each layer applied back to an empty directory. Throughput is reported in
//! bytes of uncompressed tar per second. `KILN_BENCH_LAYER_MIB` shrinks the tree for a quick run.
//!
//! Before the criterion groups, one pass per compressor prints a table with wall-clock MB/s and
//! CPU-time figures (whole process and main thread, from getrusage). On a shared, oversubscribed
//! machine wall-clock numbers say little; the CPU columns show what one core does, and for
//! parallel gzip `idle 2-core speedup` = gzip CPU time / max(main-thread CPU, total CPU / 2),
//! the speedup the pipeline allows when two cores are free.
#![allow(missing_docs)]

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_snapshotter::{
    Compression, CompressionOptions, LayerOptions, apply_layer, write_tree_layer,
};
use rand::{Rng, RngCore, SeedableRng};

const FILE_MIB: usize = 4;

fn total_mib() -> usize {
    std::env::var("KILN_BENCH_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Writes the tree: `total/2` MiB of random files and `total/2` MiB of English-like text.
fn make_tree(dir: &Path, total: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b696c6e);
    let words = [
        "layer",
        "snapshot",
        "overlay",
        "build",
        "cache",
        "stage",
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "that",
        "for",
        "image",
        "digest",
        "content",
        "kiln",
        "container",
        "run",
        "copy",
        "from",
        "with",
        "file",
        "directory",
        "mount",
        "process",
        "registry",
        "manifest",
    ];
    let files = (total / FILE_MIB).max(2);
    for i in 0..files {
        let mut data = vec![0u8; FILE_MIB << 20];
        if i % 2 == 0 {
            rng.fill_bytes(&mut data);
        } else {
            let mut text = Vec::with_capacity(data.len() + 32);
            while text.len() < data.len() {
                text.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
                text.push(if rng.random_range(0..12) == 0 {
                    b'\n'
                } else {
                    b' '
                });
            }
            text.truncate(data.len());
            data = text;
        }
        let sub = dir.join(format!("d{}", i % 8));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i:04}")), &data).unwrap();
    }
}

/// The layer compressors (gzip and zstd on every core; `KILN_COMPRESS_THREADS` sets how many,
/// see `benches/gzip.rs` for 1 against 2 threads).
fn compressors() -> [(&'static str, CompressionOptions); 3] {
    let c = |compression, level| CompressionOptions {
        compression,
        level: Some(level),
    };
    [
        ("none", c(Compression::Uncompressed, 0)),
        ("gzip", c(Compression::Gzip, 6)),
        ("zstd", c(Compression::Zstd, 3)),
    ]
}

/// (process CPU, this thread's CPU) in seconds.
fn cpu_times() -> (f64, f64) {
    let get = |who| {
        // SAFETY: getrusage only writes into the struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &raw mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    (get(libc::RUSAGE_SELF), get(libc::RUSAGE_THREAD))
}

fn summary(src: &Path, bytes: u64) {
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "\n{:<14} {:>10} {:>12} {:>12} {:>10}",
        "layer write", "wall MB/s", "MB/CPU-s", "main MB/CPU-s", "ratio"
    );
    let mut blobs = Vec::new();
    for (name, compression) in compressors() {
        let opts = LayerOptions {
            compression,
            source_date_epoch: None,
        };
        let (c0, t0) = cpu_times();
        let w = Instant::now();
        let mut blob = Vec::new();
        write_tree_layer(src, &opts, &mut blob).unwrap();
        let wall = w.elapsed().as_secs_f64();
        let (c1, t1) = cpu_times();
        let (cpu, main) = (c1 - c0, t1 - t0);
        eprintln!(
            "{name:<14} {:>10.1} {:>12.1} {:>12.1} {:>10.3}",
            mb / wall,
            mb / cpu,
            mb / main,
            blob.len() as f64 / bytes as f64
        );
        blobs.push((name, blob));
    }
    eprintln!(
        "\n{:<14} {:>10} {:>12}",
        "layer apply", "wall MB/s", "MB/CPU-s"
    );
    for (name, blob) in &blobs {
        let dst = tempfile::tempdir().unwrap();
        let (c0, _) = cpu_times();
        let w = Instant::now();
        apply_layer(&blob[..], dst.path()).unwrap();
        let wall = w.elapsed().as_secs_f64();
        let (c1, _) = cpu_times();
        eprintln!("{name:<14} {:>10.1} {:>12.1}", mb / wall, mb / (c1 - c0));
    }
    eprintln!();
}

fn layer(c: &mut Criterion) {
    let total = total_mib();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), total);
    let bytes = (total as u64) << 20;
    summary(src.path(), bytes);

    let mut blobs = Vec::new();
    let mut write = c.benchmark_group("layer_write");
    write
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(bytes));
    for (name, compression) in compressors() {
        let opts = LayerOptions {
            compression,
            source_date_epoch: None,
        };
        let mut blob = Vec::new();
        let info = write_tree_layer(src.path(), &opts, &mut blob).unwrap();
        eprintln!(
            "{name}: {} MiB tar -> {:.1} MiB blob",
            info.uncompressed_size >> 20,
            blob.len() as f64 / f64::from(1 << 20)
        );
        blobs.push((name, blob));
        write.bench_function(name, |b| {
            b.iter(|| black_box(write_tree_layer(src.path(), &opts, std::io::sink()).unwrap()));
        });
    }
    write.finish();

    let mut apply = c.benchmark_group("layer_apply");
    apply
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(bytes));
    for (name, blob) in &blobs {
        apply.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let dst = tempfile::tempdir().unwrap();
                    let t = Instant::now();
                    black_box(apply_layer(&blob[..], dst.path()).unwrap());
                    spent += t.elapsed();
                }
                spent
            });
        });
    }
    apply.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
