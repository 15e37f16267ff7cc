//! Issue 15, "no blob at build time": a build writes no layer blob. Each step's layer is hashed
//! as it streams from the step's snapshot, and the content store records that the blob is made
//! from that snapshot when something first reads it. These tests check four things:
//! - a tagged build stores no layer blob;
//! - exports and `kiln save` write the layers, with digests equal to the recorded diff_ids;
//! - a snapshot changed behind kiln's back fails the export instead of giving a blob that lies;
//! - `kiln prune --all` writes the layers of images it would otherwise strand.

use std::path::{Path, PathBuf};

use crate::common;

use common::{deferred_blob as deferred, kiln, oci, stored_blob as stored, tempdir, text};
use sha2::{Digest as _, Sha256};

fn ok(state: &tempfile::TempDir, args: &[&str]) -> String {
    let out = kiln(state).args(args).output().expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "kiln {args:?} failed:\n{e}");
    o
}

fn sha256(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold("sha256:".to_owned(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The diff_ids of `reference`'s config.
fn diff_ids(state: &tempfile::TempDir, reference: &str) -> Vec<String> {
    let config: serde_json::Value =
        serde_json::from_str(&ok(state, &["inspect", reference])).expect("config JSON");
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_owned())
        .collect()
}

/// Builds `FROM base` plus `COPY e.txt /e.txt` (`on top`) in `state`, exported as a local
/// directory, which is returned.
fn build_on_base(state: &tempfile::TempDir) -> tempfile::TempDir {
    let next = tempdir();
    common::write_files(
        next.path(),
        &[
            ("Dockerfile", "FROM base\nCOPY e.txt /e.txt\n"),
            ("e.txt", "on top\n"),
        ],
    );
    let dest = tempdir();
    let output = format!("type=local,dest={}", dest.path().display());
    ok(
        state,
        &[
            "build",
            "-q",
            "--output",
            &output,
            next.path().to_str().expect("utf-8"),
        ],
    );
    dest
}

/// A context of two COPY steps (FROM scratch: no registry needed), with `b.txt` holding `b`.
fn context(b: &str) -> tempfile::TempDir {
    let ctx = tempdir();
    common::write_files(
        ctx.path(),
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\nCOPY d /d\n"),
            ("a.txt", "first layer\n"),
            ("d/b.txt", b),
            ("d/sub/c.txt", "third file\n"),
        ],
    );
    ctx
}

/// Every file below `dir` named `name`.
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            find_named(&p, name, out);
        } else if t.is_file() && e.file_name() == name {
            out.push(p);
        }
    }
}

#[test]
fn a_build_stores_no_layer_blob_and_exports_write_layers_matching_the_diff_ids() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = context("second layer, deferred\n");
    let path = ctx.path().to_str().expect("utf-8");
    ok(&state, &["build", "-q", "-t", "app", path]);
    let ids = diff_ids(&state, "app");
    assert_eq!(ids.len(), 2, "{ids:?}");
    for d in &ids {
        assert!(
            !stored(state.path(), d).exists(),
            "{d} written at build time"
        );
        assert!(deferred(state.path(), d).is_file(), "{d} not recorded");
    }
    // `kiln images` reads the layers for their content size (12 + 23 + 11 bytes of files),
    // without writing them.
    let listing = ok(&state, &["images", "app"]);
    assert!(
        listing.contains(" 46B"),
        "content size of the layers: {listing}"
    );
    for d in &ids {
        assert!(
            !stored(state.path(), d).exists(),
            "{d} written by kiln images"
        );
    }

    // An OCI export (gzip) compresses straight from the snapshots: the uncompressed blobs stay
    // unwritten, and each exported layer decompresses to its diff_id.
    let out = tempdir();
    let dest = out.path().join("app.tar");
    let output = format!("type=oci,dest={}", dest.display());
    ok(&state, &["build", "-q", "--output", &output, path]);
    let files = oci::layout_files(&dest);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let blob = |d: &str| &files[&format!("blobs/{}", d.replacen(':', "/", 1))];
    let manifest: serde_json::Value = serde_json::from_slice(blob(
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ))
    .expect("manifest");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    for (layer, diff_id) in layers.iter().zip(&ids) {
        let gz = blob(layer["digest"].as_str().expect("digest"));
        assert_eq!(sha256(gz), layer["digest"].as_str().expect("digest"));
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar)
            .expect("gunzip");
        assert_eq!(
            &sha256(&tar),
            diff_id,
            "exported layer is not the recorded diff"
        );
        assert!(
            !stored(state.path(), diff_id).exists(),
            "uncompressed blob written"
        );
    }
    let (_, merged) = oci::oci_image(&dest);
    assert_eq!(merged["d/b.txt"], b"second layer, deferred\n");
    assert_eq!(merged["a.txt"], b"first layer\n");

    // `kiln save` (a docker archive of uncompressed layers) makes the layers as it archives
    // them, checked against their digests, and stores none.
    let saved = out.path().join("save.tar");
    ok(
        &state,
        &["save", "-o", saved.to_str().expect("utf-8"), "app"],
    );
    let archive = oci::tar_entries(&std::fs::read(&saved).expect("read save"));
    for d in &ids {
        assert!(!stored(state.path(), d).exists(), "{d} stored by save");
        assert!(
            deferred(state.path(), d).is_file(),
            "{d} no longer deferred"
        );
        let hex = d.trim_start_matches("sha256:");
        let layer = archive
            .iter()
            .find(|(name, _)| name.contains(hex))
            .map_or_else(
                || panic!("{d} not in the archive: {:?}", archive.keys()),
                |(_, data)| data,
            );
        assert_eq!(&sha256(layer), d);
    }
}

#[test]
fn a_build_from_a_built_image_mounts_its_step_snapshots_and_stores_no_layer() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = context("base layer\n");
    ok(
        &state,
        &[
            "build",
            "-q",
            "-t",
            "base",
            ctx.path().to_str().expect("utf-8"),
        ],
    );
    let base = diff_ids(&state, "base");
    let next = tempdir();
    common::write_files(
        next.path(),
        &[
            ("Dockerfile", "FROM base\nCOPY e.txt /e.txt\n"),
            ("e.txt", "on top\n"),
        ],
    );
    ok(
        &state,
        &[
            "build",
            "-q",
            "-t",
            "next",
            next.path().to_str().expect("utf-8"),
        ],
    );
    let ids = diff_ids(&state, "next");
    assert_eq!(ids[..2], base[..], "the base's layers");
    for d in &ids {
        assert!(!stored(state.path(), d).exists(), "{d} stored");
    }
    // The base's layers are the snapshots its build left: nothing is unpacked again.
    let keys = common::unpacked_layer_snapshots(state.path());
    assert!(
        keys.is_empty(),
        "the base's layers unpacked again: {keys:?}"
    );
    let out = tempdir();
    let dest = out.path().join("next");
    let output = format!("type=oci,dest={},tar=false", dest.display());
    ok(
        &state,
        &[
            "build",
            "-q",
            "--output",
            &output,
            next.path().to_str().expect("utf-8"),
        ],
    );
    let (_, merged) = oci::oci_image(&dest);
    assert_eq!(merged["d/b.txt"], b"base layer\n");
    assert_eq!(merged["e.txt"], b"on top\n");
}

#[test]
fn a_mounted_base_keeps_its_deletions_and_replacements() {
    if common::not_root() {
        return;
    }
    // The base's RUN steps delete a file, empty a directory and replace a directory by a
    // file: whiteouts and opaque directories in the step snapshots, seen through the mount.
    let Some(ctx) = common::busybox_context(concat!(
        "FROM scratch\nCOPY busybox /bin/busybox\n",
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /d/sub /r && ",
        "echo gone > /gone && echo old > /d/sub/old && echo r > /r/inner\"]\n",
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox rm -rf /gone /d/sub /r && ",
        "/bin/busybox mkdir /d/sub && echo new > /d/sub/new && echo file > /r\"]\n",
    )) else {
        return;
    };
    let state = tempdir();
    ok(
        &state,
        &[
            "build",
            "-q",
            "-t",
            "base",
            ctx.path().to_str().expect("utf-8"),
        ],
    );
    let dest = build_on_base(&state);
    let keys = common::unpacked_layer_snapshots(state.path());
    assert!(keys.is_empty(), "the base was unpacked: {keys:?}");
    let d = dest.path();
    assert!(!d.join("gone").exists(), "a deleted file came back");
    assert!(
        !d.join("d/sub/old").exists(),
        "an emptied directory's file came back"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("d/sub/new")).unwrap(),
        "new\n"
    );
    assert_eq!(std::fs::read_to_string(d.join("r")).unwrap(), "file\n");
    assert_eq!(
        std::fs::read_to_string(d.join("e.txt")).unwrap(),
        "on top\n"
    );
}

#[test]
fn a_base_with_an_empty_layer_is_mounted_after_another_build_made_the_same_empty_layer() {
    if common::not_root() {
        return;
    }
    // Every step that changes nothing has the one empty layer, whose record names the last
    // such step's snapshot: the base's chain still holds.
    let state = tempdir();
    let ctx = tempdir();
    common::write_files(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY a.txt /a.txt\nCOPY empty/ /\nCOPY d /d\n",
            ),
            ("a.txt", "first layer\n"),
            ("d/b.txt", "base layer\n"),
            (
                "other/Dockerfile",
                "FROM scratch\nCOPY empty/ /\nCOPY a.txt /x.txt\n",
            ),
        ],
    );
    std::fs::create_dir(ctx.path().join("empty")).expect("mkdir");
    let path = ctx.path().to_str().expect("utf-8");
    ok(&state, &["build", "-q", "-t", "base", path]);
    assert_eq!(
        diff_ids(&state, "base")[1],
        common::EMPTY_LAYER,
        "the empty layer"
    );
    let other = ctx.path().join("other/Dockerfile");
    ok(
        &state,
        &[
            "build",
            "-q",
            "-t",
            "other",
            "-f",
            other.to_str().expect("utf-8"),
            path,
        ],
    );
    let dest = build_on_base(&state);
    let keys = common::unpacked_layer_snapshots(state.path());
    assert!(
        keys.is_empty(),
        "the base's layers unpacked again: {keys:?}"
    );
    for (file, content) in [
        ("a.txt", "first layer\n"),
        ("d/b.txt", "base layer\n"),
        ("e.txt", "on top\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(dest.path().join(file)).expect(file),
            content
        );
    }
    assert!(
        !dest.path().join("x.txt").exists(),
        "the other image's file"
    );
}

#[test]
fn a_base_built_with_clamped_mtimes_is_unpacked_not_mounted() {
    if common::not_root() {
        return;
    }
    // SOURCE_DATE_EPOCH with rewrite-timestamp clamps the layers' mtimes: the step snapshot
    // is not that layer.
    let state = tempdir();
    let ctx = context("base layer\n");
    let oci = tempdir();
    let out = kiln(&state)
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["build", "-q", "-t", "base", "--output"])
        .arg(format!(
            "type=oci,dest={},tar=false,rewrite-timestamp=true",
            oci.path().join("base").display()
        ))
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let dest = build_on_base(&state);
    let keys = common::unpacked_layer_snapshots(state.path());
    assert_eq!(keys.len(), 2, "the base's two layers unpacked: {keys:?}");
    let mtime = std::fs::metadata(dest.path().join("d/b.txt"))
        .expect("b.txt exported")
        .modified()
        .expect("mtime");
    assert_eq!(mtime, std::time::UNIX_EPOCH, "the layer's clamped mtime");
    assert_eq!(
        std::fs::read(dest.path().join("d/b.txt")).unwrap(),
        b"base layer\n"
    );
}

#[test]
fn a_snapshot_changed_behind_kilns_back_fails_the_export_and_stores_nothing() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = context("original bytes\n");
    let path = ctx.path().to_str().expect("utf-8");
    ok(&state, &["build", "-q", "-t", "app", path]);
    let ids = diff_ids(&state, "app");
    let mut copies = Vec::new();
    find_named(&state.path().join("snapshots"), "b.txt", &mut copies);
    assert_eq!(copies.len(), 1, "{copies:?}");
    // Same size, other bytes: only the digest can tell.
    std::fs::write(&copies[0], "tampered bytes\n").expect("tamper");
    let out = tempdir();
    let saved = out.path().join("save.tar");
    let run = kiln(&state)
        .args(["save", "-o", saved.to_str().expect("utf-8"), "app"])
        .output()
        .expect("run kiln");
    let (_, err) = text(&run);
    assert!(!run.status.success(), "save of a tampered layer succeeded");
    assert!(
        err.contains(&ids[1]) && err.contains("digest"),
        "error names neither the layer nor the digest: {err}"
    );
    assert!(
        !stored(state.path(), &ids[1]).exists(),
        "a lying blob was stored"
    );
    assert!(deferred(state.path(), &ids[1]).is_file());
}

#[test]
fn prune_all_writes_the_layers_of_images_before_their_snapshots_go() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = context("kept by the image\n");
    let path = ctx.path().to_str().expect("utf-8");
    ok(&state, &["build", "-q", "-t", "app", path]);
    let ids = diff_ids(&state, "app");
    // A second image whose tag is then removed: nothing needs its last layer after the prune.
    let other = context("only in the removed image\n");
    ok(
        &state,
        &[
            "build",
            "-q",
            "-t",
            "gone",
            other.path().to_str().expect("utf-8"),
        ],
    );
    let gone = diff_ids(&state, "gone");
    assert_ne!(gone[1], ids[1]);
    ok(&state, &["rmi", "gone"]);
    ok(&state, &["prune", "--all"]);
    assert!(
        common::snapshot_keys(state.path())
            .iter()
            .all(|k| !k.starts_with("step-")),
        "step snapshots left: {:?}",
        common::snapshot_keys(state.path())
    );
    for d in &ids {
        assert!(
            stored(state.path(), d).is_file(),
            "{d} of a tagged image lost"
        );
    }
    assert!(
        !deferred(state.path(), &gone[1]).exists(),
        "record of a removed image kept"
    );
    assert!(!stored(state.path(), &gone[1]).exists());
    // The image still exports, its snapshots gone.
    let out = tempdir();
    let saved = out.path().join("save.tar");
    ok(
        &state,
        &["save", "-o", saved.to_str().expect("utf-8"), "app"],
    );
    let archive = oci::tar_entries(&std::fs::read(&saved).expect("read save"));
    let hex = ids[1].trim_start_matches("sha256:");
    let layer = archive
        .iter()
        .find(|(name, _)| name.contains(hex))
        .map(|(_, data)| data)
        .expect("layer in the archive");
    assert_eq!(oci::tar_entries(layer)["d/b.txt"], b"kept by the image\n");
}

#[test]
fn prune_during_a_build_keeps_the_layers_of_the_snapshots_the_build_still_uses() {
    if common::not_root() {
        return;
    }
    let Some(ctx) = common::busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nARG T\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"echo $T > /t && /busybox sleep 3\"]\n",
    ) else {
        return;
    };
    let path = ctx.path().to_str().expect("utf-8");
    let state = tempdir();
    ok(
        &state,
        &["build", "-q", "--build-arg", "T=0", "-t", "warm", path],
    );
    // No image needs the COPY layer now; only the running build below does.
    ok(&state, &["rmi", "warm"]);
    let build = kiln(&state)
        .args(["build", "-q", "--build-arg", "T=1", "-t", "app", path])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the build");
    // Prune while its RUN runs on top of the cached COPY snapshot.
    let started = std::time::Instant::now();
    while !common::snapshot_keys(state.path())
        .iter()
        .any(|k| k.starts_with("active"))
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the RUN never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ok(&state, &["prune", "--all"]);
    let out = build.wait_with_output().expect("wait for the build");
    let (_, err) = text(&out);
    assert!(
        out.status.success(),
        "the build failed after the prune:\n{err}"
    );
    let ids = diff_ids(&state, "app");
    let saved = tempdir();
    let dest = saved.path().join("app.tar");
    ok(
        &state,
        &["save", "-o", dest.to_str().expect("utf-8"), "app"],
    );
    let archive = oci::tar_entries(&std::fs::read(&dest).expect("read save"));
    let copy = ids[0].trim_start_matches("sha256:");
    assert!(
        archive.keys().any(|name| name.contains(copy)),
        "the COPY layer is not in the archive: {:?}",
        archive.keys()
    );
}
