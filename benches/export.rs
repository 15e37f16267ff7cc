//! `-o type=oci` of a big layer, the part kiln-image does: a layer stored uncompressed (as a
//! build stores it) converted to gzip or zstd (decompress, compress on every core, both
//! digests, ingest with its fsync) and the image written as an OCI layout tar (every blob
//! copied and verified, the tar fsynced). 64 MiB shaped like the `biglayer` scenario (half
//! random bytes, half repeated text); `KILN_BENCH_EXPORT_MIB` changes it. Each iteration
//! starts without the conversion (its record and blob removed), as the first export after a
//! build does. The summary line gives CPU per wall second: above 1 when the cores share the
//! work.
#![allow(missing_docs)]

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_image::{
    Compression, CompressionOptions, ContentStore, Image, ImageConfig, Platform, convert_image,
    export_oci, write_image,
};

fn input() -> Vec<u8> {
    let mib: usize = std::env::var("KILN_BENCH_EXPORT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    kiln_testkit::layer_like_bytes(mib << 20, 0x2545_f491)
}

/// An image of one uncompressed layer holding `data`.
fn stored_image(store: &ContentStore, data: &[u8]) -> Image {
    let mut w = store
        .layer_writer(CompressionOptions {
            compression: Compression::Uncompressed,
            level: None,
        })
        .unwrap();
    w.write_all(data).unwrap();
    let layer = w.finish().unwrap();
    let mut config = ImageConfig::new(&Platform::linux_amd64());
    config.rootfs.diff_ids.push(layer.diff_id);
    write_image(store, &config, &[layer.descriptor]).unwrap()
}

/// Forgets every conversion: its records and the blobs not in `keep`.
fn forget_conversions(state: &Path, store: &ContentStore, keep: &[kiln_image::Digest]) {
    let _ = std::fs::remove_dir_all(state.join("content/converted"));
    for d in store.list_blobs().unwrap() {
        if !keep.contains(&d) {
            store.remove_blob(&d).unwrap();
        }
    }
}

/// (process CPU) in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn export(c: &mut Criterion) {
    let data = input();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = ContentStore::open(&state).unwrap();
    let image = stored_image(&store, &data);
    let keep = store.list_blobs().unwrap();
    let out = dir.path().join("out.tar");
    let mut group = c.benchmark_group("export_oci");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(data.len() as u64));
    for (name, compression) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let opts = CompressionOptions {
            compression,
            level: None,
        };
        let run = || {
            forget_conversions(&state, &store, &keep);
            let converted = convert_image(&store, &image, opts, false).unwrap();
            export_oci(&store, &converted, &[], &out, true).unwrap();
        };
        let (c0, w0) = (cpu_seconds(), Instant::now());
        run();
        let (cpu, wall) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
        eprintln!(
            "{name}: {} MiB -> {:.1} MiB tar, one export {wall:.2}s wall, {cpu:.2}s CPU \
             ({:.2} CPU/wall)",
            data.len() >> 20,
            std::fs::metadata(&out).unwrap().len() as f64 / f64::from(1 << 20),
            cpu / wall
        );
        group.bench_function(name, |b| b.iter(run));
    }
    group.finish();
}

criterion_group!(benches, export);
criterion_main!(benches);
