//! Layer compression throughput: kiln-image's parallel gzip (and zstd) with 1 and 2 threads
//! over 64 MiB shaped like the `biglayer` scenario (half random bytes, half repeated text).
//! The output is the same for every thread count (checked here too), so the only difference
//! is wall time. `KILN_BENCH_GZIP_MIB` changes the input size.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write as _;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_image::{Compression, CompressionOptions, Compressor};

fn input() -> Vec<u8> {
    let mib: usize = std::env::var("KILN_BENCH_GZIP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    kiln_testkit::layer_like_bytes(mib << 20, 0x2545_f491)
}

fn compress(data: &[u8], compression: Compression, threads: usize) -> Vec<u8> {
    let opts = CompressionOptions {
        compression,
        level: None,
    };
    let mut c = Compressor::with_threads(Vec::with_capacity(data.len()), opts, threads).unwrap();
    for chunk in data.chunks(256 * 1024) {
        c.write_all(chunk).unwrap();
    }
    c.finish().unwrap()
}

fn gzip(c: &mut Criterion) {
    let data = input();
    let mut group = c.benchmark_group("compress");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(data.len() as u64));
    for (name, compression) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let one = compress(&data, compression, 1);
        assert!(
            compress(&data, compression, 2) == one,
            "{name}: 2 threads gave other bytes"
        );
        eprintln!(
            "{name}: {} MiB -> {:.1} MiB",
            data.len() >> 20,
            one.len() as f64 / f64::from(1 << 20)
        );
        for threads in [1, 2] {
            group.bench_function(format!("{name}/{threads}-thread"), |b| {
                b.iter(|| black_box(compress(&data, compression, threads)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gzip);
criterion_main!(benches);
