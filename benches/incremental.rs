//! Issue 15, incremental COPY and FROM of a built image. A 3,000-file context (about 12 MB;
//! `KILN_BENCH_INCREMENTAL_FILES` changes the count) is copied by `COPY tree /tree`, then built
//! again after one file is added (`add`), removed (`remove`, another each round) or changed
//! (`edit`): the copy takes the other files from its previous result. `full` is the same COPY
//! in a fresh state directory (what every such rebuild cost before). `from_built` builds `FROM`
//! an image built in the same state directory (its step snapshots are mounted, nothing
//! unpacked). Needs root (overlayfs); prints a note and measures nothing otherwise.
#![allow(missing_docs)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_solver::{BuildRequest, NoProgress, Solver, SolverConfig};

fn files() -> usize {
    std::env::var("KILN_BENCH_INCREMENTAL_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn make_context(dir: &Path, n: usize) {
    for i in 0..n {
        let sub = dir.join(format!("tree/d{:02}", i % 30));
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            sub.join(format!("f{i:05}.txt")),
            format!("{i}\n").repeat(400),
        )
        .unwrap();
    }
    fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY tree /tree\n").unwrap();
}

fn build(state: &Path, ctx: &Path, tag: Option<&str>) {
    let solver = Solver::new(SolverConfig::new(state)).unwrap();
    let mut req = BuildRequest::new(ctx);
    if let Some(t) = tag {
        req.tags.push(t.to_owned());
    }
    solver.build(&req, &NoProgress).unwrap();
}

fn bench(c: &mut Criterion) {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("incremental bench: needs root (overlayfs); skipped");
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    make_context(ctx.path(), files());
    let state = tempfile::tempdir().unwrap();
    build(state.path(), ctx.path(), Some("base"));
    let mut g = c.benchmark_group("copy_again");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(6));
    let added = ctx.path().join("tree/d00/added.txt");
    let edited = ctx.path().join("tree/d01/f00001.txt");
    let mut n = 0u64;
    g.bench_function("add", |b| {
        b.iter(|| {
            n += 1;
            fs::write(&added, format!("added {n}\n")).unwrap();
            build(state.path(), ctx.path(), None);
            fs::remove_file(&added).unwrap();
        });
    });
    // Each round removes another file (the context keeps shrinking: never a cache hit).
    let mut removed = 0usize;
    g.bench_function("remove", |b| {
        b.iter(|| {
            removed += 1;
            let i = files() - removed;
            let gone = ctx.path().join(format!("tree/d{:02}/f{i:05}.txt", i % 30));
            fs::remove_file(gone).unwrap();
            build(state.path(), ctx.path(), None);
        });
    });
    g.bench_function("edit", |b| {
        b.iter(|| {
            n += 1;
            fs::write(&edited, format!("edited {n}\n")).unwrap();
            build(state.path(), ctx.path(), None);
        });
    });
    g.bench_function("full", |b| {
        b.iter(|| {
            let fresh = tempfile::tempdir().unwrap();
            build(fresh.path(), ctx.path(), None);
        });
    });
    let next = tempfile::tempdir().unwrap();
    fs::write(next.path().join("Dockerfile"), "FROM base\nCOPY x /x\n").unwrap();
    g.bench_function("from_built", |b| {
        b.iter(|| {
            n += 1;
            fs::write(next.path().join("x"), format!("{n}\n")).unwrap();
            build(state.path(), next.path(), None);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
