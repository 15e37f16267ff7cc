//! Issue 15, "no blob at build time": what a build step pays for its layer. A 64 MiB tree (half
//! random, half text; `KILN_BENCH_DEFERRED_MIB` changes the size) is written as a layer two
//! ways: `stored`, into a content-store ingest (hashed, written, fsynced, renamed: what a build
//! did before) and `deferred`, hashed only with the blob recorded as deferred (what a build
//! does now). `first_read` is what an export pays later for a deferred blob: the layer written
//! from the tree again through the ingest, checked against the recorded digest.
#![allow(missing_docs)]

use std::fs;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_image::{BlobSource, ContentStore, Digest};
use kiln_snapshotter::{Compression, CompressionOptions, LayerOptions, write_tree_layer};
use rand::{RngCore, SeedableRng};

fn total_mib() -> usize {
    std::env::var("KILN_BENCH_DEFERRED_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn make_tree(dir: &Path, mib: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b696c6e);
    for i in 0..mib.max(2) {
        let mut data = vec![0u8; 1 << 20];
        if i % 2 == 0 {
            rng.fill_bytes(&mut data);
        } else {
            for (j, b) in data.iter_mut().enumerate() {
                *b = b"a line of compressible build output\n"[j % 36];
            }
        }
        let sub = dir.join(format!("d{}", i % 4));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i:04}")), &data).unwrap();
    }
}

fn options() -> LayerOptions {
    LayerOptions {
        compression: CompressionOptions {
            compression: Compression::Uncompressed,
            level: None,
        },
        source_date_epoch: None,
    }
}

/// Makes deferred blobs from the tree named by the source.
struct Trees;

impl BlobSource for Trees {
    fn write_blob(&self, source: &str, out: &mut dyn Write) -> io::Result<()> {
        write_tree_layer(Path::new(source), &options(), out)
            .map(|_| ())
            .map_err(io::Error::other)
    }
}

fn bench(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let tree: PathBuf = src.path().join("tree");
    make_tree(&tree, total_mib());
    let state = tempfile::tempdir().unwrap();
    let store = ContentStore::open(state.path())
        .unwrap()
        .with_blob_source(Arc::new(Trees));
    let bytes = write_tree_layer(&tree, &options(), io::sink())
        .unwrap()
        .uncompressed_size;
    let mut g = c.benchmark_group("step_layer");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(bytes));
    g.bench_function("stored", |b| {
        b.iter(|| {
            let mut w = store.blob_writer().unwrap();
            let info = write_tree_layer(&tree, &options(), &mut w).unwrap();
            let d = Digest::parse(&info.digest).unwrap();
            w.commit(Some(&d)).unwrap();
            store.remove_blob(&d).unwrap();
        });
    });
    g.bench_function("deferred", |b| {
        b.iter(|| {
            let info = write_tree_layer(&tree, &options(), io::sink()).unwrap();
            let d = Digest::parse(&info.digest).unwrap();
            store
                .defer_blob(&d, info.size, tree.to_str().unwrap())
                .unwrap();
            black_box(d);
        });
    });
    let info = write_tree_layer(&tree, &options(), io::sink()).unwrap();
    let d = Digest::parse(&info.digest).unwrap();
    g.bench_function("first_read", |b| {
        b.iter(|| {
            store
                .defer_blob(&d, info.size, tree.to_str().unwrap())
                .unwrap();
            store.materialize(&d).unwrap();
            store.remove_blob(&d).unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
