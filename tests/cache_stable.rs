//! Issue 14: a build's image id and exported bytes depend on its inputs only. A fully cached
//! rebuild is the same image (history and created times come from the cache records, as
//! BuildKit's exporter takes them from its refs), and `SOURCE_DATE_EPOCH` with
//! `rewrite-timestamp=true` makes fresh builds byte-identical.

mod common;

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
