//! `kiln prune` through the binary: it removes cache records and snapshots so the next build
//! runs every step again, and rejects a malformed `--keep-storage` as a usage error.

mod common;

use common::{hello_context, kiln, not_root, tempdir, text};

fn snapshot_count(state: &tempfile::TempDir) -> usize {
    let dir = state.path().join("snapshots");
    std::fs::read_dir(&dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count()
    })
}

#[test]
fn prune_all_removes_the_cache_so_the_next_build_runs_again() {
    if not_root() {
        return;
    }
    let state = tempdir();
    let build = |state: &tempfile::TempDir| {
        let out = kiln(state)
            .args(["build", "--progress=plain", "-t", "hello:latest"])
            .arg(hello_context())
            .output()
            .expect("run kiln");
        let (_, err) = text(&out);
        assert!(out.status.success(), "{err}");
        err
    };
    build(&state);
    assert!(build(&state).contains(" ---> Using cache"));

    // Nothing is dangling yet: a plain prune keeps the cache.
    let out = kiln(&state).arg("prune").output().expect("run kiln");
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.starts_with("Removed 0 cache records and 0 snapshots\n"),
        "{stdout}"
    );
    assert!(build(&state).contains(" ---> Using cache"));

    let before = snapshot_count(&state);
    let out = kiln(&state)
        .args(["prune", "--all"])
        .output()
        .expect("run kiln");
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Removed ") && !first.starts_with("Removed 0 cache records"),
        "{stdout}"
    );
    assert!(stdout.contains("\nTotal reclaimed space: "), "{stdout}");
    assert!(snapshot_count(&state) < before, "{before} snapshots before");

    let again = build(&state);
    assert!(!again.contains("Using cache"), "{again}");
}

#[test]
fn malformed_keep_storage_is_a_usage_error() {
    let state = tempdir();
    let out = kiln(&state)
        .args(["prune", "--keep-storage", "10XB"])
        .output()
        .expect("run kiln");
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid size `10XB`: unknown unit `xb`"),
        "{err}"
    );
}
