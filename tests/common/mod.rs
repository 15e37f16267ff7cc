//! Helpers shared by the tests that drive the `kiln` binary: a command with its own state
//! directory and a predictable environment, and the skip-or-fail rule for missing tools.

#![allow(dead_code, unreachable_pub)]

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `kiln` with a fresh state directory (kept alive by the returned guard), no colors, and no
/// inherited progress setting. `KILN_TEST_BIN` runs another build of kiln instead (e.g. an
/// older one, to check that a regression test fails there).
pub fn kiln(state: &tempfile::TempDir) -> Command {
    let bin = std::env::var_os("KILN_TEST_BIN")
        .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_kiln")));
    let mut cmd = Command::new(bin);
    cmd.env("KILN_ROOT", state.path())
        .env("NO_COLOR", "1")
        .env_remove("KILN_PROGRESS")
        .env_remove("BUILDKIT_PROGRESS")
        .env_remove("RUST_LOG");
    cmd
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-cli-test-")
        .tempdir()
        .expect("temporary directory")
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned()
}

/// [`kiln_testkit::skip`] for the running test, answering "was it skipped?": prints
/// `skipped: <test>: why` and returns true, or panics when `CI` is set.
pub fn skip(why: &str) -> bool {
    !kiln_testkit::skip(&test_name(), why)
}

/// Whether we are root (RUN steps need namespaces and mounts).
pub fn is_root() -> bool {
    kiln_testkit::is_root()
}

/// Builds mount snapshots and create namespaces, so they need root: true (after a skip
/// message; a panic under CI) when we are not ([`kiln_testkit::require_root`]).
pub fn not_root() -> bool {
    !kiln_testkit::require_root(&test_name())
}

/// Writes `files` (path, contents) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, contents) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, contents).expect("write");
    }
}

/// The repository's `examples/hello` context.
pub fn hello_context() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello")
}

/// A context holding the static busybox binary as `/busybox`, so a `FROM scratch` image can
/// `RUN ["/busybox", "sh", "-c", ...]` without any registry. None (after a skip message) when
/// busybox-static is not installed.
pub fn busybox_context(dockerfile: &str) -> Option<tempfile::TempDir> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(busybox) = busybox else {
        skip("busybox-static is not installed");
        return None;
    };
    let dir = tempdir();
    std::fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    Some(dir)
}

/// Keys of the snapshots recorded in the state directory: one record file each under
/// `snapshots/active/` and `snapshots/committed/` (named by the key: kiln's keys need no escaping).
pub fn snapshot_keys(state: &Path) -> Vec<String> {
    ["active", "committed"]
        .iter()
        .filter_map(|d| std::fs::read_dir(state.join("snapshots").join(d)).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The snapshot keys under `state` that hold an image's unpacked layers (`layer-<chain id>`,
/// made by a `FROM`, `kiln run`, pull or load).
pub fn unpacked_layer_snapshots(state: &Path) -> Vec<String> {
    snapshot_keys(state)
        .into_iter()
        .filter(|k| k.starts_with("layer-"))
        .collect()
}

/// The diff_id of an empty layer (an empty tar stream: two zero blocks).
pub const EMPTY_LAYER: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// Where the content store under `state` keeps the blob `digest` (`sha256:<hex>`).
pub fn stored_blob(state: &Path, digest: &str) -> PathBuf {
    state
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The record of a deferred blob `digest` (a layer a build kept as a snapshot, written when
/// first read) under `state`.
pub fn deferred_blob(state: &Path, digest: &str) -> PathBuf {
    state
        .join("content/deferred")
        .join(digest.trim_start_matches("sha256:"))
}

/// A pseudo-terminal of `cols` x `rows`: (master, slave).
pub fn openpty(cols: u16, rows: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers are valid; name and termios may be null.
    let rc = unsafe {
        libc::openpty(
            &raw mut master,
            &raw mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &raw const ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors we now own.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

pub mod oci;
pub mod registry;
pub mod screen;
