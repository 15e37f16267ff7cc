//! Issue 14: a build's image id and exported bytes depend on its inputs only. A fully cached
//! rebuild is the same image (history and created times come from the cache records, as
//! BuildKit's exporter takes them from its refs), and `SOURCE_DATE_EPOCH` with
//! `rewrite-timestamp=true` makes fresh builds byte-identical.

use crate::common;

use std::path::Path;

use common::{busybox_context, kiln, not_root, tempdir, text};

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /busybox\nCOPY app /app\nENV A=1\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"mkdir -p /out && echo made > /out/f && /busybox date +%s%N > /out/when\"]\n\
LABEL x=y\n";

/// Builds `ctx` on `state` with `extra` arguments, writing the image id and an OCI archive to
/// `out`; returns (image id, archive bytes, stdout json/plain, stderr).
fn build(
    state: &tempfile::TempDir,
    ctx: &Path,
    out: &Path,
    extra: &[&str],
    oci_opts: &str,
    env: &[(&str, &str)],
) -> (String, Vec<u8>, String) {
    let iid = out.with_extension("iid");
    let tar = out.with_extension("tar");
    let mut cmd = kiln(state);
    cmd.env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd
        .args(["build", "--progress=plain", "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg("-o")
        .arg(format!("type=oci,dest={}{oci_opts}", tar.display()))
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (_, err) = text(&o);
    assert!(o.status.success(), "build failed: {err}");
    let id = std::fs::read_to_string(&iid).expect("iidfile");
    let bytes = std::fs::read(&tar).expect("oci archive");
    (id.trim().to_string(), bytes, err)
}

fn context() -> Option<tempfile::TempDir> {
    let ctx = busybox_context(DOCKERFILE)?;
    common::write_files(
        ctx.path(),
        &[("app/a.txt", "one\n"), ("app/b/c.txt", "two\n")],
    );
    Some(ctx)
}

#[test]
fn a_cached_rebuild_is_the_same_image_and_the_same_bytes() {
    if not_root() {
        return;
    }
    let Some(ctx) = context() else { return };
    let state = tempdir();
    let out = tempdir();
    let (id1, tar1, err1) = build(&state, ctx.path(), &out.path().join("1"), &[], "", &[]);
    assert!(!err1.contains("Using cache"), "first build ran: {err1}");
    // A second apart, so a time stamped from the clock would differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (id2, tar2, err2) = build(&state, ctx.path(), &out.path().join("2"), &[], "", &[]);
    assert!(
        err2.contains("Using cache"),
        "second build hit the cache: {err2}"
    );
    assert!(id1.starts_with("sha256:"), "{id1}");
    assert_eq!(id1, id2, "a fully cached rebuild gives the same image id");
    assert!(
        tar1 == tar2,
        "a fully cached rebuild exports the same bytes"
    );

    // A changed file is a different image.
    std::fs::write(ctx.path().join("app/a.txt"), "changed\n").expect("write");
    let (id3, tar3, _) = build(&state, ctx.path(), &out.path().join("3"), &[], "", &[]);
    assert_ne!(id1, id3);
    assert!(tar1 != tar3);
}

const REPRO: &str = "FROM scratch\nCOPY busybox /busybox\nCOPY app /app\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"mkdir -p /out/d && echo made > /out/f && echo x > /out/d/g && /busybox touch /app/a.txt\"]\n";

fn repro_context() -> Option<tempfile::TempDir> {
    let ctx = busybox_context(REPRO)?;
    common::write_files(
        ctx.path(),
        &[("app/a.txt", "one\n"), ("app/b/c.txt", "two\n")],
    );
    Some(ctx)
}

fn ran_run_step(plain: &str) -> bool {
    // The RUN is the last step; it ran when it has no `Using cache` line of its own.
    let run = plain.rsplit("Step 4/4").next().unwrap_or("");
    !run.contains("Using cache")
}

#[test]
fn source_date_epoch_with_rewrite_timestamp_gives_the_same_bytes_fresh_or_cached() {
    if not_root() {
        return;
    }
    let Some(ctx) = repro_context() else { return };
    let out = tempdir();
    let args = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let opts = ",rewrite-timestamp=true";
    let (s1, s2) = (tempdir(), tempdir());
    let (id1, tar1, _) = build(&s1, ctx.path(), &out.path().join("1"), &args, opts, &[]);
    // The clock moves on between the builds; file mtimes are clamped.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(ctx.path().join("app/a.txt"), "one\n").expect("rewrite a file");
    let (id2, tar2, _) = build(&s2, ctx.path(), &out.path().join("2"), &args, opts, &[]);
    assert_eq!(id1, id2, "two fresh state dirs give the same image id");
    assert!(
        tar1 == tar2,
        "two fresh state dirs give byte-identical archives"
    );
    let (id3, tar3, plain3) = build(&s1, ctx.path(), &out.path().join("3"), &args, opts, &[]);
    assert!(
        !ran_run_step(&plain3),
        "the RUN came from the cache: {plain3}"
    );
    assert_eq!(id1, id3);
    assert!(
        tar1 == tar3,
        "a cached build gives the same bytes as a fresh one"
    );

    // The environment's epoch (as buildx passes it) does the same.
    let (id4, _, _) = build(
        &tempdir(),
        ctx.path(),
        &out.path().join("4"),
        &[],
        opts,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(id1, id4, "SOURCE_DATE_EPOCH from the environment");
    // The config blob is stored uncompressed in the archive.
    let text = String::from_utf8_lossy(&tar1);
    assert!(
        text.contains("\"created\":\"2023-11-14T22:13:20Z\""),
        "the config carries the epoch"
    );
}

#[test]
fn the_epoch_is_part_of_the_keys_of_rewritten_layers() {
    if not_root() {
        return;
    }
    let Some(ctx) = repro_context() else { return };
    let out = tempdir();
    let opts = ",rewrite-timestamp=true";
    let state = tempdir();
    let env1 = [("SOURCE_DATE_EPOCH", "1000")];
    let env2 = [("SOURCE_DATE_EPOCH", "2000000")];
    let (id1, _, _) = build(&state, ctx.path(), &out.path().join("1"), &[], opts, &env1);
    let (id2, tar2, plain2) = build(&state, ctx.path(), &out.path().join("2"), &[], opts, &env2);
    assert!(
        ran_run_step(&plain2),
        "a new epoch runs the step again: {plain2}"
    );
    assert_ne!(id1, id2);
    let (id3, tar3, _) = build(
        &tempdir(),
        ctx.path(),
        &out.path().join("3"),
        &[],
        opts,
        &env2,
    );
    assert_eq!(id2, id3, "the same as a fresh build with that epoch");
    assert!(tar2 == tar3);
    // Without rewrite-timestamp the layers do not depend on the epoch and are reused.
    let (_, _, plain4) = build(&state, ctx.path(), &out.path().join("4"), &[], "", &env1);
    let (_, _, plain5) = build(&state, ctx.path(), &out.path().join("5"), &[], "", &env2);
    assert!(ran_run_step(&plain4), "{plain4}");
    assert!(!ran_run_step(&plain5), "{plain5}");
}

#[test]
fn a_build_from_an_imported_cache_is_the_same_image() {
    if not_root() {
        return;
    }
    let Some(ctx) = context() else { return };
    let out = tempdir();
    let cache = out.path().join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let from = format!("type=local,src={}", cache.display());
    let (id1, tar1, _) = build(
        &tempdir(),
        ctx.path(),
        &out.path().join("1"),
        &["--cache-to", &to],
        "",
        &[],
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (id2, tar2, err2) = build(
        &tempdir(),
        ctx.path(),
        &out.path().join("2"),
        &["--cache-from", &from],
        "",
        &[],
    );
    assert!(
        err2.contains("Using cache"),
        "the RUN came from the cache: {err2}"
    );
    assert_eq!(id1, id2, "the same image as the exporting build");
    assert!(tar1 == tar2);
}
