//! `--cache-to` / `--cache-from` through the binary: a build exports its step cache (to a real
//! `docker-registry`, or to an OCI layout directory), and a second machine (a fresh state
//! directory) imports it and reuses the steps — a RUN that writes the current time and 16
//! random bytes (busybox `date` has no `%N`) is not run again, so its file and the image's
//! layers are identical.

use crate::common;

use std::path::Path;

use common::registry::Registry;
use common::{busybox_context, kiln, not_root, oci::oci_image, tempdir, text};

const DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /busybox\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox date +%s%N > /stamp; /busybox od -An -tx1 -N16 /dev/urandom >> /stamp\"]\n\
ENV DONE=1\n";

/// Builds `context` in `state` with `extra` flags, exporting the image as an OCI layout to
/// `out`; returns stderr.
fn build(state: &tempfile::TempDir, context: &Path, out: &Path, extra: &[&str]) -> String {
    let started = std::time::Instant::now();
    let output = kiln(state)
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            "SOURCE_DATE_EPOCH=0",
        ])
        .args(extra)
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(context)
        .output()
        .expect("run kiln");
    let (_, err) = text(&output);
    assert!(output.status.success(), "{extra:?}: {err}");
    eprintln!("build {extra:?}: {:?}", started.elapsed());
    err
}

/// The RUN step's progress block: everything from its `Step` line to the next `Step`.
fn run_step_block(log: &str) -> String {
    let start = log.find("RUN [").expect("RUN step in the log");
    let rest = &log[start..];
    let end = rest.find("\nStep ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// Builds from A exporting to `to`, then from a fresh B importing from `from`.
fn roundtrip(to: &str, from: &str) {
    let Some(ctx) = busybox_context(DOCKERFILE) else {
        return;
    };
    let (a, b, outs) = (tempdir(), tempdir(), tempdir());
    let (out_a, out_b) = (outs.path().join("a.tar"), outs.path().join("b.tar"));
    let log_a = build(&a, ctx.path(), &out_a, &["--cache-to", to]);
    assert!(
        !run_step_block(&log_a).contains("Using cache"),
        "cold build hit the cache: {log_a}"
    );
    assert!(!log_a.contains("not supported yet"), "{log_a}");

    let log_b = build(&b, ctx.path(), &out_b, &["--cache-from", from]);
    assert!(!log_b.contains("not supported yet"), "{log_b}");
    assert!(
        run_step_block(&log_b).contains(" ---> Using cache"),
        "the imported RUN step ran again: {log_b}"
    );

    let (config_a, files_a) = oci_image(&out_a);
    let (config_b, files_b) = oci_image(&out_b);
    assert!(files_a.contains_key("stamp"), "{:?}", files_a.keys());
    assert_eq!(
        files_a.get("stamp"),
        files_b.get("stamp"),
        "the RUN step ran again"
    );
    assert_eq!(files_a, files_b);
    assert_eq!(config_a["rootfs"], config_b["rootfs"], "diff_ids differ");
    assert_eq!(config_a, config_b);

    // Without the import, a fresh machine runs the step: the test can tell the difference.
    let (c, out_c) = (tempdir(), outs.path().join("c.tar"));
    let log_c = build(&c, ctx.path(), &out_c, &[]);
    assert!(!run_step_block(&log_c).contains("Using cache"), "{log_c}");
    let (_, files_c) = oci_image(&out_c);
    assert_ne!(files_a.get("stamp"), files_c.get("stamp"));
}

#[test]
fn registry_cache_is_reused_by_a_fresh_state_dir() {
    if not_root() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let r = format!("{}/kiln/cache:buildcache", reg.addr);
    roundtrip(
        &format!("type=registry,ref={r},mode=max"),
        &format!("type=registry,ref={r}"),
    );
}

#[test]
fn local_cache_is_reused_by_a_fresh_state_dir() {
    if not_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path().join("cache");
    roundtrip(
        &format!("type=local,dest={},mode=max", d.display()),
        &format!("type=local,src={}", d.display()),
    );
}

#[test]
fn min_mode_exports_the_final_image_steps_and_missing_caches_only_warn() {
    if not_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path().join("cache");
    roundtrip(
        &format!("type=local,dest={}", d.display()),
        &format!("type=local,src={}", d.display()),
    );
    // An unreadable import is a warning, and unsupported types are warned about.
    let Some(ctx) = busybox_context(DOCKERFILE) else {
        return;
    };
    let (s, outs) = (tempdir(), tempdir());
    let missing = format!("type=local,src={}", dir.path().join("nope").display());
    let log = build(
        &s,
        ctx.path(),
        &outs.path().join("o.tar"),
        &["--cache-from", &missing, "--cache-to", "type=gha,scope=x"],
    );
    assert!(log.contains("failed to import cache"), "{log}");
    assert!(
        log.contains("`--cache-to type=gha` is not supported yet"),
        "{log}"
    );
}

const MULTI_STAGE: &str = "FROM scratch AS builder\n\
COPY busybox /busybox\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox od -An -tx1 -N16 /dev/urandom > /built\"]\n\
FROM scratch\n\
COPY --from=builder /built /built\n";

#[test]
fn min_mode_leaves_out_other_stages_and_max_keeps_them() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(MULTI_STAGE) else {
        return;
    };
    let (a, dirs) = (tempdir(), tempdir());
    let (min, max) = (dirs.path().join("min"), dirs.path().join("max"));
    let out = dirs.path().join("a.tar");
    let to_min = format!("type=local,dest={}", min.display());
    let to_max = format!("type=local,dest={},mode=max", max.display());
    build(
        &a,
        ctx.path(),
        &out,
        &["--cache-to", &to_min, "--cache-to", &to_max],
    );
    let (_, files_a) = oci_image(&out);

    // max: the builder stage's RUN is reused, and so is the final COPY.
    let (b, out_b) = (tempdir(), dirs.path().join("b.tar"));
    let from_max = format!("type=local,src={}", max.display());
    let log = build(&b, ctx.path(), &out_b, &["--cache-from", &from_max]);
    assert!(run_step_block(&log).contains(" ---> Using cache"), "{log}");
    assert_eq!(oci_image(&out_b).1, files_a);

    // min: only the final stage's COPY was exported; the builder's RUN runs again (new bytes).
    let (c, out_c) = (tempdir(), dirs.path().join("c.tar"));
    let from_min = format!("type=local,src={}", min.display());
    let log = build(&c, ctx.path(), &out_c, &["--cache-from", &from_min]);
    assert!(!run_step_block(&log).contains("Using cache"), "{log}");
    assert_ne!(oci_image(&out_c).1.get("built"), files_a.get("built"));
}
