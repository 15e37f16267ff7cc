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

/// A state directory holding `busybox:latest` built from the host's static busybox.
fn state_with_busybox() -> Option<tempfile::TempDir> {
    let ctx = common::busybox_context(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )?;
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-q", "-t", "busybox:latest"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    Some(state)
}

fn run_kiln(state: &tempfile::TempDir, args: &[&str]) -> (Option<i32>, String, String) {
    let out = kiln(state).args(args).output().expect("run kiln");
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

/// The `system df` row of `kind`: TOTAL, ACTIVE, SIZE, RECLAIMABLE.
fn df_row(state: &tempfile::TempDir, kind: &str) -> Vec<String> {
    let (code, out, err) = run_kiln(state, &["system", "df"]);
    assert_eq!(code, Some(0), "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} row: {out}"));
    line[kind.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Stored blobs and deferred ones (layers a build recorded but never wrote).
fn blob_count(state: &tempfile::TempDir) -> usize {
    ["content/blobs/sha256", "content/deferred"]
        .iter()
        .map(|d| std::fs::read_dir(state.path().join(d)).map_or(0, Iterator::count))
        .sum()
}

#[test]
fn system_df_and_prune_account_for_and_remove_images_and_cache() {
    if not_root() {
        return;
    }
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = tempdir();
    let build = |script: &str| {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM busybox\nRUN {script}\n"),
        )
        .expect("write Dockerfile");
        let out = kiln(&state)
            .args(["build", "-q", "-t", "app:latest"])
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        assert!(out.status.success(), "{}", text(&out).1);
    };
    build("head -c 300000 /dev/zero > /data");
    build("head -c 500000 /dev/zero > /data");
    // busybox, app and the dangling first app; 2 named.
    let images = df_row(&state, "Images");
    assert_eq!(images[..2], ["3", "2"], "{images:?}");
    // busybox (~2MB) + 300 kB + 500 kB of layers, uncompressed.
    let size = images[2].trim_end_matches("MB").parse::<f64>().expect("MB");
    assert!((2.5..3.5).contains(&size), "{images:?}");
    // The dangling image's own layer (300 kB) is reclaimable.
    assert!(images[3].starts_with("300kB"), "{images:?}");
    let cache = df_row(&state, "Build Cache");
    assert_ne!(cache[0], "0", "{cache:?}");
    assert_ne!(cache[2], "0B", "{cache:?}");

    // Everything is younger than an hour: nothing to prune before that.
    let (code, out, err) = run_kiln(
        &state,
        &["image", "prune", "-a", "-f", "--filter", "until=1h"],
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "Total reclaimed space: 0B\n"),
        "{err}"
    );
    let (code, _, err) = run_kiln(&state, &["image", "prune", "-f", "--filter", "label=x"]);
    assert_eq!(code, Some(2), "{err}");

    // system prune: the dangling image goes (its layer stays while the cache names it).
    let (code, out, err) = run_kiln(&state, &["system", "prune", "-f"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Deleted Images:\ndeleted: sha256:"), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    let (_, dangling, _) = run_kiln(&state, &["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling, "");
    assert_eq!(df_row(&state, "Images")[..2], ["2", "2"]);

    // system prune -a: every image (untagged first) and all cache, every blob gone.
    let (code, out, err) = run_kiln(&state, &["system", "prune", "-a", "-f"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("untagged: app:latest\n"), "{out}");
    assert!(out.contains("untagged: busybox:latest\n"), "{out}");
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");
    assert_eq!(blob_count(&state), 0, "blobs left");
    assert_eq!(df_row(&state, "Images"), ["0", "0", "0B", "0B"]);
    assert_eq!(df_row(&state, "Build Cache")[..3], ["0", "0", "0B"]);
    assert_eq!(run_kiln(&state, &["images", "-q"]).1, "");
}

#[test]
fn image_prune_removes_the_snapshots_only_the_pruned_images_used() {
    if not_root() {
        return;
    }
    let Some(built) = state_with_busybox() else {
        return;
    };
    let ctx = tempdir();
    let build = |n: u32| {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM busybox\nRUN echo {n} > /n\n"),
        )
        .expect("write Dockerfile");
        let out = kiln(&built)
            .args(["build", "-q", "-t", "app:latest"])
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        assert!(out.status.success(), "{}", text(&out).1);
        text(&out).0.trim().to_owned()
    };
    let archives = tempdir();
    let save = |name: &str, refs: &[&str]| {
        let path = archives.path().join(name);
        let mut args = vec!["save", "-o", path.to_str().expect("utf-8")];
        args.extend_from_slice(refs);
        let (code, _, err) = run_kiln(&built, &args);
        assert_eq!(code, Some(0), "{err}");
        path
    };
    let old = build(1);
    // Running an image built here mounts the build's own snapshots: nothing is unpacked.
    let (code, out, err) = run_kiln(&built, &["run", "--network", "none", &old, "cat", "/n"]);
    assert_eq!((code, out.as_str()), (Some(0), "1\n"), "{err}");
    assert_eq!(
        common::unpacked_layer_snapshots(built.path()),
        Vec::<String>::new()
    );
    let first = save("first.tar", &["busybox:latest", "app:latest"]);
    build(2);
    let second = save("second.tar", &["app:latest"]);

    // Loaded images are unpacked into `layer-` snapshots; loading app:latest again moves the
    // tag and leaves the first app image dangling.
    let state = tempdir();
    let (code, _, err) = run_kiln(&state, &["load", "-i", first.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    let unpacked = common::unpacked_layer_snapshots(state.path());
    // busybox's two layers (COPY, RUN) and app's RUN.
    assert_eq!(unpacked.len(), 3, "{unpacked:?}");
    let (code, _, err) = run_kiln(&state, &["load", "-i", second.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(common::unpacked_layer_snapshots(state.path()).len(), 4);
    let (code, out, err) = run_kiln(&state, &["image", "prune", "-f"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Deleted Images:"), "{out}");
    // The old image's own layer is gone; busybox's stay (busybox:latest and app use them).
    let left = common::unpacked_layer_snapshots(state.path());
    assert_eq!(left.len(), 3, "{left:?}");
    let shared = left.iter().filter(|l| unpacked.contains(l)).count();
    assert_eq!(shared, 2, "busybox's layers: {left:?}");
    let (code, out, err) = run_kiln(
        &state,
        &["run", "--network", "none", "busybox", "echo", "ok"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"), "{err}");
    let (code, out, err) = run_kiln(&state, &["run", "--network", "none", "app", "cat", "/n"]);
    assert_eq!((code, out.as_str()), (Some(0), "2\n"), "{err}");
}
