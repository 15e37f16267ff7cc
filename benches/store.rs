//! Snapshot store operations against the number of snapshots the store holds (issue 15: the
//! index must not grow with use). For stores of 200 and 3,000 committed snapshots (native
//! driver, one small file each, chains of 10): `stat` of a snapshot (what a cached step costs)
//! and a step's `prepare` + `commit` + `remove` cycle on an empty parent. Both should take the
//! same time whatever the size. `KILN_BENCH_STORE_SIZES=200,3000` changes the sizes.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln_snapshotter::{DriverChoice, Snapshotter, open};

fn sizes() -> Vec<usize> {
    std::env::var("KILN_BENCH_STORE_SIZES").map_or_else(
        |_| vec![200, 3000],
        |v| v.split(',').filter_map(|s| s.parse().ok()).collect(),
    )
}

/// A store of `n` committed snapshots in chains of ten.
fn store(n: usize) -> (tempfile::TempDir, Box<dyn Snapshotter>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path(), DriverChoice::Native).expect("open");
    for i in 0..n {
        let parent = (i % 10 != 0).then(|| format!("s{}", i - 1));
        s.prepare("a", parent.as_deref()).expect("prepare");
        s.commit(&format!("s{i}"), "a").expect("commit");
    }
    (dir, s)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(30).measurement_time(Duration::from_secs(3));
    for n in sizes() {
        let (dir, s) = store(n);
        g.bench_with_input(BenchmarkId::new("stat", n), &n, |b, _| {
            b.iter(|| black_box(s.stat("s5").expect("stat")));
        });
        g.bench_with_input(BenchmarkId::new("prepare_commit_remove", n), &n, |b, _| {
            b.iter(|| {
                s.prepare("step", None).expect("prepare");
                s.commit("step-c", "step").expect("commit");
                s.remove("step-c").expect("remove");
            });
        });
        g.bench_with_input(BenchmarkId::new("open", n), &n, |b, _| {
            b.iter(|| black_box(open(dir.path(), DriverChoice::Native).expect("open")));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
