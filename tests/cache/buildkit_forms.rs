//! Issue 14: the image as BuildKit v0.24 makes it for steps that change nothing (every RUN,
//! COPY and WORKDIR keeps its layer, the empty tar, as BuildKit's layer chain holds every exec
//! and file op's ref), for the mount points that cache, tmpfs and secret mounts leave (the
//! stubs of targets that did not exist are removed when empty, BuildKit's
//! `MountStubsCleaner`; a parent the step filled stays, root-owned 0755 as runc made it), and
//! for every `--chown` form (`llb.WithUser` and the file op's `readUser`).

use crate::common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use common::{busybox_context, kiln, not_root, tempdir, text, write_files};

/// sha256 of the empty tar (two zero blocks).
use common::EMPTY_LAYER as EMPTY;

/// One tar entry: type, mode, uid, gid.
type Entry = (char, u32, u64, u64);

/// Builds `ctx` to an OCI layout; returns (config, per-layer entries).
fn build(ctx: &Path, args: &[&str]) -> (serde_json::Value, Vec<BTreeMap<String, Entry>>) {
    let state = tempdir();
    build_in(&state, ctx, args)
}

fn build_in(
    state: &tempfile::TempDir,
    ctx: &Path,
    args: &[&str],
) -> (serde_json::Value, Vec<BTreeMap<String, Entry>>) {
    let out = tempdir();
    let dest = out.path().join("oci");
    let o = kiln(state)
        .args(["build", "--progress=plain"])
        .args(args)
        .arg("--output")
        .arg(format!("type=oci,dest={},tar=false", dest.display()))
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let blob =
        |d: &str| std::fs::read(dest.join("blobs").join(d.replacen(':', "/", 1))).expect("blob");
    let json = |b: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&b).expect("json") };
    let index = json(std::fs::read(dest.join("index.json")).expect("index"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().expect("d")));
    let config = json(blob(manifest["config"]["digest"].as_str().expect("d")));
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().expect("layers") {
        let raw = blob(l["digest"].as_str().expect("d"));
        let mut data = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut data)
            .expect("gunzip");
        let mut entries = BTreeMap::new();
        for e in tar::Archive::new(&data[..]).entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                _ => 'f',
            };
            let path = e.path().expect("path").to_string_lossy().into_owned();
            entries.insert(
                path.trim_end_matches('/').to_owned(),
                (
                    kind,
                    h.mode().expect("mode") & 0o7777,
                    h.uid().expect("uid"),
                    h.gid().expect("gid"),
                ),
            );
        }
        layers.push(entries);
    }
    (config, layers)
}

fn diff_ids(config: &serde_json::Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("str").to_owned())
        .collect()
}

#[test]
fn steps_that_change_nothing_keep_an_empty_layer_as_buildkit_does() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"true\"]\nWORKDIR /w\n\
         WORKDIR /w\nENV A=1\nRUN [\"/busybox\", \"touch\", \"/w/f\"]\n",
    ) else {
        return;
    };
    let state = tempdir();
    let (config, layers) = build_in(&state, ctx.path(), &[]);
    let ids = diff_ids(&config);
    assert_eq!(ids.len(), 5, "COPY, RUN, WORKDIR, WORKDIR, RUN: {ids:?}");
    assert_eq!(ids[1], EMPTY, "RUN that changed nothing");
    assert_eq!(ids[3], EMPTY, "WORKDIR of an existing directory");
    assert!(layers[1].is_empty() && layers[3].is_empty());
    assert!(layers[2].contains_key("w") && layers[4].contains_key("w/f"));
    let history = config["history"].as_array().expect("history");
    let empty: Vec<bool> = history
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(
        empty,
        [false, false, false, false, true, false],
        "{history:?}"
    );
    // A cached rebuild is the same image.
    let (again, _) = build_in(&state, ctx.path(), &[]);
    assert_eq!(again, config);
}

#[test]
fn mount_targets_leave_only_the_parents_a_step_filled() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\n\
         RUN --mount=type=cache,target=/a/b/c,uid=5,mode=0700 --mount=type=tmpfs,target=/t/u \
         --mount=type=secret,id=s,target=/s/d/f --mount=type=secret,id=s \
         [\"/busybox\", \"sh\", \"-c\", \"/busybox touch /a/sib /s/other && /busybox test -f /run/secrets/s\"]\n",
    ) else {
        return;
    };
    let secret = ctx.path().join("secret.txt");
    std::fs::write(&secret, "x").expect("write secret");
    let (_, layers) = build(
        ctx.path(),
        &["--secret", &format!("id=s,src={}", secret.display())],
    );
    let run = &layers[1];
    let names: Vec<&str> = run.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "a/sib", "s", "s/other"], "{run:?}");
    assert_eq!(run["a"], ('d', 0o755, 0, 0));
    assert_eq!(run["s"], ('d', 0o755, 0, 0));
}

#[test]
fn every_chown_form_resolves_in_the_destination_rootfs_as_buildkit_does() {
    if not_root() {
        return;
    }
    let dockerfile = "FROM scratch\nCOPY etc /etc\n\
        COPY --chown=app f /o/name\n\
        COPY --chown=1000 f /o/id\n\
        COPY --chown=2000 f /o/absent-id\n\
        COPY --chown=app:staff f /o/name-group\n\
        COPY --chown=:staff f /o/group-only\n\
        COPY --chown=app: f /o/empty-group\n\
        COPY --chown=12:34 f /o/ids\n\
        COPY --chown=2000:staff f /o/absent-id-group\n\
        COPY --chown=app:nogroup f /o/absent-group\n\
        COPY --chown=nosuch f /o/absent-name\n\
        COPY --chown=root:app f /o/root-app\n\
        COPY --chown=app --chmod=0640 f d/ /o/dir/\n";
    let Some(ctx) = busybox_context(dockerfile) else {
        return;
    };
    write_files(
        ctx.path(),
        &[
            (
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            ),
            ("etc/group", "root:x:0:\napp:x:1001:\nstaff:x:50:\n"),
            ("f", "f\n"),
            ("d/g", "g\n"),
        ],
    );
    let (_, layers) = build(ctx.path(), &[]);
    let owner = |path: &str| {
        let (_, _, u, g) = layers
            .iter()
            .rev()
            .find_map(|l| l.get(path))
            .unwrap_or_else(|| panic!("{path} in no layer"));
        (*u, *g)
    };
    assert_eq!(owner("o/name"), (1000, 1001), "a name: its primary gid");
    assert_eq!(owner("o/id"), (1000, 1000), "an id: the same number");
    assert_eq!(owner("o/absent-id"), (2000, 2000));
    assert_eq!(owner("o/name-group"), (1000, 50));
    assert_eq!(owner("o/group-only"), (0, 50));
    assert_eq!(owner("o/empty-group"), (1000, 0));
    assert_eq!(owner("o/ids"), (12, 34));
    assert_eq!(owner("o/absent-id-group"), (2000, 50));
    assert_eq!(owner("o/absent-group"), (1000, 1001));
    assert_eq!(owner("o/absent-name"), (0, 0));
    assert_eq!(owner("o/root-app"), (0, 1001));
    assert_eq!(owner("o/dir/g"), (1000, 1001));
    let mode = layers
        .iter()
        .rev()
        .find_map(|l| l.get("o/dir/g"))
        .map(|e| e.1);
    assert_eq!(mode, Some(0o640));
}
