//! Issue 15 (memory): what a build holds per context file. A `COPY` of a big context is
//! measured cold (`--no-cache`), warm (every step a cache hit) and after one file changed (the
//! incremental COPY), at two context sizes: the peak RSS of the `kiln` process (its own
//! `ru_maxrss`, from `wait4`) may grow by at most [`MAX_BYTES_PER_FILE`] per file between them.
//! Walk entries, entry lines, the metadata cache, the explanation store and the layer's
//! hard-link table each used to cost hundreds of bytes a file (about 1.4 KiB in all).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common;

use common::{kiln, not_root, tempdir};

/// Files of the small and the big context.
const SMALL: usize = 1_000;
const BIG: usize = 9_000;

/// Peak RSS growth allowed per context file, in bytes: the goal (64 MB at 100,000 files) with
/// room for the process itself. The old code grew by 1,400 to 1,800 bytes a file; this one by
/// about 200 (warm), 300 (cold) and 450 (edit: the previous and current entry lines, the
/// metadata cache and the layer's hard-link table are held together).
const MAX_BYTES_PER_FILE: i64 = 600;

/// Writes a context of `n` small files under `tree/dNN/` and a Dockerfile copying it whole.
fn context(dir: &Path, n: usize) {
    for i in 0..n {
        let d = dir.join(format!("tree/d{:02}", i % 100));
        if i < 100 {
            fs::create_dir_all(&d).expect("mkdir");
        }
        fs::write(d.join(format!("f{i:06}.dat")), format!("file {i}\n")).expect("write");
    }
    fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY tree /ctx\n").expect("write");
}

/// Runs `cmd` (a build that must succeed) and returns its peak RSS in KiB.
fn peak_rss_kib(mut cmd: Command, what: &str) -> i64 {
    let log = tempfile::NamedTempFile::new().expect("log file");
    // Waited for by `wait4` below, which also gives the child's own resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("reopen log"))
        .spawn()
        .expect("run kiln");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not waited for yet; the pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(
        ok,
        "{what} failed ({status}): {}",
        fs::read_to_string(log.path()).unwrap_or_default()
    );
    ru.ru_maxrss
}

/// Peak RSS (KiB) of the cold, warm and edit builds of an `n`-file context.
fn phases(n: usize) -> [i64; 3] {
    let state = tempdir();
    let ctx = tempdir();
    context(ctx.path(), n);
    let build = |args: &[&str], what: &str| {
        let mut cmd = kiln(&state);
        cmd.args(["build", "--progress=plain"])
            .args(args)
            .arg(ctx.path());
        peak_rss_kib(cmd, what)
    };
    let cold = build(&["--no-cache"], "cold build");
    let warm = build(&[], "warm build");
    fs::write(ctx.path().join("tree/d07/f000007.dat"), "changed\n").expect("edit");
    let edit = build(&[], "edit build");
    [cold, warm, edit]
}

#[test]
fn peak_memory_per_context_file_is_small() {
    if not_root() {
        return;
    }
    let small = phases(SMALL);
    let big = phases(BIG);
    let files = (BIG - SMALL) as i64;
    let per_file: Vec<i64> = small
        .iter()
        .zip(&big)
        .map(|(s, b)| (b - s) * 1024 / files)
        .collect();
    eprintln!(
        "peak KiB at {SMALL} files {small:?}, at {BIG} files {big:?}: bytes per file {per_file:?}"
    );
    for (phase, bytes) in ["cold", "warm", "edit"].iter().zip(&per_file) {
        assert!(
            *bytes <= MAX_BYTES_PER_FILE,
            "{phase}: {bytes} bytes of peak RSS per context file (at most \
             {MAX_BYTES_PER_FILE}); peak KiB at {SMALL} files {small:?}, at {BIG} files {big:?}"
        );
    }
}
