//! Issue 14: `--cache-to ...,mode=max,cache-mounts=true` carries the content of the build's
//! `RUN --mount=type=cache` directories beside the step cache, and `--cache-from` on a fresh
//! state dir seeds an absent mount before the first RUN that uses it, so a CI runner does not
//! start with empty package caches. Local (OCI layout) and registry exports.

use crate::common;

use std::path::Path;

use common::registry::Registry;
use common::{busybox_context, kiln, not_root, tempdir, text};

/// Writes into the cache mount (owned 1000:1000, mode 0750, with a nested file and a symlink).
const WRITER: &str = "FROM scratch\nCOPY busybox /busybox\n\
RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs,uid=1000,gid=1000,mode=0750 \
[\"/busybox\", \"sh\", \"-c\", \"/busybox mkdir -p /var/cache/pkgs/sub && \
echo downloaded > /var/cache/pkgs/sub/pkg.deb && /busybox ln -s sub/pkg.deb /var/cache/pkgs/link\"]\n";

/// A different step (so it runs) that reads the mount into the image.
const READER: &str = "FROM scratch\nCOPY busybox /busybox\n\
RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs,uid=1000,gid=1000,mode=0750 \
[\"/busybox\", \"sh\", \"-c\", \"(/busybox cat /var/cache/pkgs/link || echo none) > /seen; \
/busybox stat -c '%u:%g %a' /var/cache/pkgs >> /seen\"]\n";

fn build(state: &tempfile::TempDir, ctx: &Path, args: &[String]) -> String {
    let o = kiln(state)
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (_, err) = text(&o);
    assert!(o.status.success(), "{args:?}: {err}");
    err
}

/// Exports from a writer build to `to`, then reads on a fresh state dir importing `from`;
/// returns what the reader's RUN saw in the mount.
fn seen_after(to: &str, from: &str) -> String {
    let (Some(w), Some(r)) = (busybox_context(WRITER), busybox_context(READER)) else {
        return String::new();
    };
    let a = tempdir();
    build(&a, w.path(), &["--cache-to".into(), to.into()]);
    let b = tempdir();
    let out = tempdir();
    build(
        &b,
        r.path(),
        &[
            "--cache-from".into(),
            from.into(),
            "--output".into(),
            format!("type=local,dest={}", out.path().display()),
        ],
    );
    std::fs::read_to_string(out.path().join("seen")).expect("the reader's /seen")
}

#[test]
fn a_local_cache_export_seeds_the_cache_mount_on_a_fresh_state_dir() {
    if not_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path().join("cache");
    let seen = seen_after(
        &format!("type=local,dest={},mode=max,cache-mounts=true", d.display()),
        &format!("type=local,src={}", d.display()),
    );
    assert_eq!(seen, "downloaded\n1000:1000 750\n");
}

#[test]
fn a_registry_cache_export_seeds_the_cache_mount_on_a_fresh_state_dir() {
    if not_root() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let r = format!("{}/kiln/cache:mounts", reg.addr);
    let seen = seen_after(
        &format!("type=registry,ref={r},mode=max,cache-mounts=true"),
        &format!("type=registry,ref={r}"),
    );
    assert_eq!(seen, "downloaded\n1000:1000 750\n");
}

#[test]
fn without_cache_mounts_true_the_mount_starts_empty_and_a_used_mount_is_not_overwritten() {
    if not_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path().join("cache");
    let seen = seen_after(
        &format!("type=local,dest={},mode=max", d.display()),
        &format!("type=local,src={}", d.display()),
    );
    assert_eq!(seen, "none\n1000:1000 750\n");

    // A mount that has content here already is left as it is.
    let (Some(w), Some(r)) = (busybox_context(WRITER), busybox_context(READER)) else {
        return;
    };
    let a = tempdir();
    let to = format!("type=local,dest={},mode=max,cache-mounts=true", d.display());
    build(&a, w.path(), &["--cache-to".into(), to]);
    let b = tempdir();
    let pkgs = b.path().join("mounts/cache/pkgs");
    std::fs::create_dir_all(&pkgs).expect("mkdir");
    std::fs::write(pkgs.join("local"), "mine\n").expect("write");
    let out = tempdir();
    build(
        &b,
        r.path(),
        &[
            "--cache-from".into(),
            format!("type=local,src={}", d.display()),
            "--output".into(),
            format!("type=local,dest={}", out.path().display()),
        ],
    );
    assert!(!pkgs.join("link").exists() && pkgs.join("local").exists());
}
