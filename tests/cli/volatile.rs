//! A RUN step's writable overlay is mounted `volatile`: its fsyncs (dpkg's, one per file it
//! unpacks) return at once, since kiln never makes a snapshot durable anyway.

use crate::common;

use common::{busybox_context, kiln, tempdir, text};

#[test]
fn a_run_steps_overlay_root_is_volatile() {
    if common::not_root() {
        return;
    }
    let Some(ctx) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"grep\", \" / / \", \"/proc/self/mountinfo\"]\n",
    ) else {
        return;
    };
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{e}");
    let progress = format!("{o}{e}");
    let root = progress
        .lines()
        .find(|l| l.starts_with('#') && l.contains(" / / "))
        .unwrap_or_else(|| panic!("no root mount in:\n{progress}"));
    if !root.contains(" overlay ") {
        common::skip("the state uses the native snapshot driver (no overlayfs here)");
        return;
    }
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 10) {
        common::skip("overlayfs has `volatile` from Linux 5.10");
        return;
    }
    // Shown as `volatile` or, on newer kernels, `fsync=volatile`.
    assert!(root.contains("volatile"), "{root}");
}
