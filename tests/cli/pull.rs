//! `kiln pull` and `kiln load` unpack an image's layers into the snapshot chain that builds
//! mount (`layer-<chain id>`), as docker's pull and load extract them: the first build `FROM`
//! the image unpacks nothing.

use crate::common;

use common::{kiln, snapshot_keys, tempdir, text};
use kiln_testkit::SHARED_REGISTRY;
use sha2::{Digest as _, Sha256};

/// Runs kiln with `args` on `state`; panics unless it succeeds. Returns (stdout, stderr).
fn ok(state: &tempfile::TempDir, args: &[&str]) -> (String, String) {
    let out = kiln(state).args(args).output().expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "kiln {args:?} failed:\n{e}");
    (o, e)
}

/// The snapshot names of `reference`'s layers in `state`: `layer-<chain id>`, base first, the
/// chain ids computed from the config's diff_ids as the OCI image spec defines them.
fn layer_snapshots(state: &tempfile::TempDir, reference: &str) -> Vec<String> {
    let (config, _) = ok(state, &["inspect", reference]);
    let config: serde_json::Value = serde_json::from_str(&config).expect("config JSON");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert!(!diff_ids.is_empty(), "{config}");
    let mut chain = String::new();
    diff_ids
        .iter()
        .map(|d| {
            let d = d.as_str().expect("diff_id");
            chain = if chain.is_empty() {
                d.to_owned()
            } else {
                format!("sha256:{}", hex(&Sha256::digest(format!("{chain} {d}"))))
            };
            format!("layer-{}", chain.trim_start_matches("sha256:"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Builds `FROM reference` + a `RUN` reading the image's files on `state`; returns the plain
/// progress (stdout and stderr).
fn build_from(state: &tempfile::TempDir, reference: &str) -> String {
    let ctx = tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {reference}\nRUN test -x /bin/sh && echo from-the-image\n"),
    )
    .expect("write Dockerfile");
    let path = ctx.path().to_str().expect("utf-8 path");
    let (o, e) = ok(state, &["build", "--progress=plain", path]);
    format!("{o}{e}")
}

#[test]
fn pull_and_load_unpack_the_layers_so_a_build_from_the_image_unpacks_nothing() {
    let test = "pull_and_load_unpack_the_layers_so_a_build_from_the_image_unpacks_nothing";
    if common::not_root() || !kiln_testkit::require_shared_registry(test) {
        return;
    }
    let reference = format!("{SHARED_REGISTRY}/busybox:latest");
    let state = tempdir();
    let (out, _) = ok(
        &state,
        &["pull", "--insecure-registry", SHARED_REGISTRY, &reference],
    );
    assert!(out.contains("Pull complete"), "{out}");
    let layers = layer_snapshots(&state, &reference);
    let keys = snapshot_keys(state.path());
    for l in &layers {
        assert!(keys.contains(l), "{l} not unpacked by the pull: {keys:?}");
    }
    // Nothing but the committed layers: no temporary snapshot left behind.
    assert_eq!(keys.len(), layers.len(), "{keys:?}");
    // The FROM step finds the chain: it is not run (no unpack), the RUN sees the files.
    let progress = build_from(&state, &reference);
    assert!(
        progress.contains(&format!("Step 1/2 : FROM {reference}\n ---> Using cache\n")),
        "{progress}"
    );
    assert!(progress.contains("from-the-image"), "{progress}");
    // A pull of an image already unpacked unpacks nothing again.
    let (out, _) = ok(
        &state,
        &["pull", "--insecure-registry", SHARED_REGISTRY, &reference],
    );
    assert!(out.contains("Image is up to date"), "{out}");

    // `kiln load` into another state: the same chain, made by the load.
    let archive = tempdir();
    let tar = archive.path().join("busybox.tar");
    let tar = tar.to_str().expect("utf-8 path");
    ok(&state, &["save", "-o", tar, &reference]);
    let loaded = tempdir();
    let (out, _) = ok(&loaded, &["load", "-i", tar]);
    assert!(out.contains("Loaded image"), "{out}");
    let keys = snapshot_keys(loaded.path());
    for l in &layers {
        assert!(keys.contains(l), "{l} not unpacked by the load: {keys:?}");
    }
    let progress = build_from(&loaded, &reference);
    assert!(
        progress.contains(&format!("Step 1/2 : FROM {reference}\n ---> Using cache\n")),
        "{progress}"
    );
}
