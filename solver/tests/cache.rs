//! Cache correctness through the public API: which changes to a build's inputs invalidate a
//! step and which must not. The builds use `FROM scratch` and COPY only, so they need neither a
//! registry nor containers, but they mount real overlay snapshots: root is required.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use kiln_solver::{BuildRequest, Progress, ProgressEvent, Solver, SolverConfig, StepId};

/// Records, per instruction, whether its step was cached.
#[derive(Default)]
struct Recorder {
    names: Mutex<BTreeMap<StepId, String>>,
    cached: Mutex<Vec<String>>,
    ran: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn event(&self, e: &ProgressEvent) {
        match e {
            ProgressEvent::StepStarted {
                step, instruction, ..
            } => {
                self.names
                    .lock()
                    .expect("lock")
                    .insert(*step, instruction.clone());
            }
            ProgressEvent::StepCached { step } => {
                let n = self
                    .names
                    .lock()
                    .expect("lock")
                    .get(step)
                    .cloned()
                    .unwrap_or_default();
                self.cached.lock().expect("lock").push(n);
            }
            ProgressEvent::StepDone { step, .. } => {
                let n = self
                    .names
                    .lock()
                    .expect("lock")
                    .get(step)
                    .cloned()
                    .unwrap_or_default();
                self.ran.lock().expect("lock").push(n);
            }
            _ => {}
        }
    }
}

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "cache tests need root (overlay mounts) and CI is set"
    );
    println!("skipped: cache tests need root (overlay mounts)");
    false
}

struct Fixture {
    state: tempfile::TempDir,
    ctx: tempfile::TempDir,
}

impl Fixture {
    fn new(dockerfile: &str) -> Self {
        let f = Self {
            state: tempfile::tempdir().expect("state"),
            ctx: tempfile::tempdir().expect("ctx"),
        };
        f.write("Dockerfile", dockerfile);
        f
    }

    fn write(&self, name: &str, data: &str) {
        let p = self.ctx.path().join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.ctx.path().join(name)
    }

    /// Builds and returns (cached instructions, executed instructions).
    fn build(&self) -> (Vec<String>, Vec<String>) {
        let solver = Solver::new(SolverConfig::new(self.state.path())).expect("solver");
        let rec = Recorder::default();
        solver
            .build(&BuildRequest::new(self.ctx.path()), &rec)
            .expect("build");
        (
            rec.cached.into_inner().expect("lock"),
            rec.ran.into_inner().expect("lock"),
        )
    }
}

fn set_mtime(p: &Path, secs: i64) {
    set_times_at(p, secs, 0);
}

/// `set_mtime` of a symlink itself.
fn set_link_mtime(p: &Path, secs: i64) {
    set_times_at(p, secs, libc::AT_SYMLINK_NOFOLLOW);
}

fn set_times_at(p: &Path, secs: i64, flags: libc::c_int) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) };
    assert_eq!(r, 0, "utimensat");
}

const COPY_ONE: &str = "FROM scratch\nCOPY f.txt /f.txt\n";

#[test]
fn content_change_with_same_size_and_mtime_invalidates() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(COPY_ONE);
    f.write("f.txt", "aaaa");
    set_mtime(&f.path("f.txt"), 1_600_000_000);
    let (_, ran) = f.build();
    assert_eq!(ran, vec!["COPY f.txt /f.txt"]);
    let (cached, _) = f.build();
    assert_eq!(cached, vec!["COPY f.txt /f.txt"], "unchanged context hits");
    f.write("f.txt", "bbbb");
    set_mtime(&f.path("f.txt"), 1_600_000_000);
    let (cached, ran) = f.build();
    assert!(
        cached.is_empty(),
        "content change must invalidate: cached {cached:?}"
    );
    assert_eq!(ran, vec!["COPY f.txt /f.txt"]);
}

#[test]
fn mode_change_invalidates_and_touch_hits() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(COPY_ONE);
    f.write("f.txt", "data");
    f.build();
    set_mtime(&f.path("f.txt"), 1_700_000_123);
    let (cached, ran) = f.build();
    assert_eq!(cached, vec!["COPY f.txt /f.txt"], "mtime-only change hits");
    assert!(ran.is_empty());
    fs::set_permissions(f.path("f.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let (cached, ran) = f.build();
    assert!(
        cached.is_empty(),
        "mode change must invalidate: cached {cached:?}"
    );
    assert_eq!(ran, vec!["COPY f.txt /f.txt"]);
}

#[test]
fn change_to_dockerignored_file_hits() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY . /ctx/\n");
    f.write(".dockerignore", "*.log\n");
    f.write("keep.txt", "keep");
    f.write("debug.log", "one");
    f.build();
    f.write("debug.log", "two, longer");
    let (cached, ran) = f.build();
    assert_eq!(cached, vec!["COPY . /ctx/"], "ignored file must not count");
    assert!(ran.is_empty());
    f.write("keep.txt", "changed");
    let (cached, _) = f.build();
    assert!(cached.is_empty(), "a kept file does count");
}

#[test]
fn unrelated_stage_change_does_not_invalidate_another_stage() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(
        "FROM scratch AS a\nCOPY a.txt /a\nFROM scratch AS b\nCOPY b.txt /b\nFROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    );
    f.write("a.txt", "a");
    f.write("b.txt", "b");
    let (_, ran) = f.build();
    assert_eq!(ran.len(), 4);
    f.write("b.txt", "b2");
    let (cached, ran) = f.build();
    assert!(
        cached.contains(&"COPY a.txt /a".to_string()),
        "stage a untouched: {cached:?}"
    );
    assert!(
        cached.contains(&"COPY --from=a /a /a".to_string()),
        "copy from a still hits: {cached:?}"
    );
    assert!(ran.contains(&"COPY b.txt /b".to_string()));
    assert!(ran.contains(&"COPY --from=b /b /b".to_string()));
    assert_eq!(ran.len(), 2, "{ran:?}");
}

#[test]
fn prune_all_removes_records_and_snapshots() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(COPY_ONE);
    f.write("f.txt", "data");
    f.build();
    let solver = Solver::new(SolverConfig::new(f.state.path())).expect("solver");
    let dangling = solver
        .prune(&kiln_solver::PruneOptions::default())
        .expect("prune");
    assert_eq!(
        dangling.records_removed, 0,
        "nothing dangling after a clean build"
    );
    let r = solver
        .prune(&kiln_solver::PruneOptions {
            all: true,
            keep_storage: None,
        })
        .expect("prune all");
    assert_eq!(r.records_removed, 1);
    assert!(r.snapshots_removed >= 1, "{r:?}");
    assert!(solver.cache_store().all().is_empty());
    let (cached, ran) = f.build();
    assert!(cached.is_empty(), "pruned cache cannot hit: {cached:?}");
    assert_eq!(ran, vec!["COPY f.txt /f.txt"]);
}

#[test]
fn copy_from_stage_reruns_with_remembered_source_digest() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(
        "FROM scratch AS a\nCOPY a.txt /a\nFROM scratch\nCOPY c.txt /c\nCOPY --from=a /a /a\n",
    );
    f.write("a.txt", "from-a");
    f.write("c.txt", "c1");
    f.build();
    f.write("c.txt", "c2");
    let out = tempfile::tempdir().expect("out");
    let solver = Solver::new(SolverConfig::new(f.state.path())).expect("solver");
    let rec = Recorder::default();
    let mut req = BuildRequest::new(f.ctx.path());
    req.outputs.push(kiln_solver::OutputSpec::Local {
        dest: out.path().to_path_buf(),
    });
    solver.build(&req, &rec).expect("build");
    let ran = rec.ran.into_inner().expect("lock");
    assert!(ran.contains(&"COPY --from=a /a /a".to_string()), "{ran:?}");
    assert_eq!(
        fs::read_to_string(out.path().join("a")).expect("read /a"),
        "from-a"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("c")).expect("read /c"),
        "c2"
    );
}

#[test]
fn identical_steps_in_two_stages_run_once() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new(
        "FROM scratch AS a\nCOPY f.txt /f.txt\nFROM scratch AS b\nCOPY f.txt /f.txt\nFROM scratch\nCOPY --from=a /f.txt /a\nCOPY --from=b /f.txt /b\n",
    );
    f.write("f.txt", "same");
    let (cached, ran) = f.build();
    let n_ran = ran.iter().filter(|r| *r == "COPY f.txt /f.txt").count();
    let n_cached = cached.iter().filter(|r| *r == "COPY f.txt /f.txt").count();
    assert_eq!((n_ran, n_cached), (1, 1), "ran {ran:?} cached {cached:?}");
}

/// Builds `f`'s context in `state`; returns the layers' diff_ids and the executed
/// instructions.
fn build_layers(f: &Fixture, state: &Path) -> (Vec<String>, Vec<String>) {
    let solver = Solver::new(SolverConfig::new(state)).expect("solver");
    let rec = Recorder::default();
    let out = solver
        .build(&BuildRequest::new(f.ctx.path()), &rec)
        .expect("build");
    let layers = out
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    (layers, rec.ran.into_inner().expect("lock"))
}

/// Issue 15: a COPY run again because one file of a 2,000-file context changed takes the other
/// files from the previous result of the step (hard links inside the state directory) and
/// writes only the changed ones, and its layer is the one a full copy of the edited context
/// makes (same diff_id, so the same contents, modes, owners and times), without hard-link
/// entries.
#[test]
fn incremental_copy_makes_the_layer_of_a_full_copy() {
    if !root_or_skip() {
        return;
    }
    // Destinations the copy makes itself (no `/` at the end, no parent to make): every time in
    // the layer is a source's, so two full copies of one context give one layer.
    let f = Fixture::new("FROM scratch\nCOPY src /src\nCOPY --chmod=600 src/d00 /one\n");
    for i in 0..2000 {
        let name = format!("src/d{:02}/f{i:04}.txt", i % 40);
        f.write(&name, &format!("file {i}\n"));
        if i % 7 == 0 {
            fs::set_permissions(f.path(&name), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        set_mtime(&f.path(&name), 1_600_000_000 + i64::from(i));
    }
    for d in 0..40 {
        set_mtime(&f.path(&format!("src/d{d:02}")), 1_600_100_000);
    }
    set_mtime(&f.path("src"), 1_600_200_000);
    let (first, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran.len(), 2);
    let fresh = tempfile::tempdir().expect("state");
    assert_eq!(
        build_layers(&f, fresh.path()).0,
        first,
        "full copies are reproducible"
    );
    // One file's content, another's mode and a third's mtime change.
    f.write("src/d00/f0000.txt", "edited\n");
    set_mtime(&f.path("src/d00/f0000.txt"), 1_600_000_000);
    fs::set_permissions(
        f.path("src/d01/f0001.txt"),
        fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    set_mtime(&f.path("src/d02/f0002.txt"), 1_650_000_000);
    set_mtime(&f.path("src/d00"), 1_600_100_000);
    let (second, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(first[0], second[0]);
    let fresh = tempfile::tempdir().expect("state");
    let (full, _) = build_layers(&f, fresh.path());
    assert_eq!(second, full, "the incremental layers are the full copy's");

    // The previous result's files were linked, not copied: an unchanged file of the new
    // snapshot shares its inode with the old one (nlink 2), a changed one does not.
    let snaps = f.state.path().join("snapshots");
    let links = |rel: &str| -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(&snaps)
            .expect("snapshots")
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::symlink_metadata(e.path().join("fs/src").join(rel)).ok())
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(
        links("d03/f0003.txt"),
        vec![2, 2],
        "unchanged: one inode, two snapshots"
    );
    assert_eq!(links("d00/f0000.txt"), vec![1, 1], "changed: written anew");
    assert_eq!(
        links("d02/f0002.txt"),
        vec![1, 1],
        "new mtime: written anew"
    );
    // The layer blob (uncompressed: named by its diff_id, written from the snapshot when
    // first read) holds no hard-link entry.
    let digest = kiln_image::Digest::parse(&second[0]).expect("digest");
    let blob = kiln_solver::open_content_store(f.state.path())
        .expect("store")
        .open_blob(&digest)
        .expect("blob");
    let mut files = 0;
    for e in tar::Archive::new(blob).entries().expect("tar") {
        let e = e.expect("entry");
        assert_ne!(
            e.header().entry_type(),
            tar::EntryType::Link,
            "hard link in the layer"
        );
        files += usize::from(e.header().entry_type() == tar::EntryType::Regular);
    }
    assert_eq!(files, 2000);
}

/// The nlink of `rel` (below `/src`) in each snapshot of `state` that has it, sorted.
fn src_links(state: &Path, rel: &str) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(state.join("snapshots"))
        .expect("snapshots")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::symlink_metadata(e.path().join("fs/src").join(rel)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
        .collect();
    v.sort_unstable();
    v
}

/// Issue 15: files and directories added to or removed from a COPY'd directory still take the
/// unchanged files from the previous result, and the layer is the full copy's; an entry whose
/// kind changed is copied in full, with the same layer as a full copy.
#[test]
fn incremental_copy_with_added_and_removed_entries_makes_the_layer_of_a_full_copy() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY src /src\n");
    for i in 0..300 {
        f.write(
            &format!("src/d{:02}/f{i:04}.txt", i % 10),
            &format!("file {i}\n"),
        );
    }
    f.write("src/gone/x.txt", "x\n");
    f.write("src/gone/sub/y.txt", "y\n");
    let (first, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran.len(), 1);

    // Added: a file in a directory that was there, a new directory with a nested one, a
    // symlink. Removed: a file, and a directory with its contents.
    f.write("src/d00/new.txt", "new\n");
    f.write("src/fresh/deep/z.txt", "z\n");
    std::os::unix::fs::symlink("d00/new.txt", f.path("src/link")).expect("symlink");
    fs::remove_file(f.path("src/d01/f0001.txt")).expect("rm");
    fs::remove_dir_all(f.path("src/gone")).expect("rm -r");
    let (second, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran, vec!["COPY src /src".to_string()]);
    assert_ne!(second, first);
    let fresh = tempfile::tempdir().expect("state");
    assert_eq!(
        build_layers(&f, fresh.path()).0,
        second,
        "the incremental layer is the full copy's"
    );
    let state = f.state.path();
    assert_eq!(
        src_links(state, "d03/f0003.txt"),
        vec![2, 2],
        "unchanged: linked"
    );
    assert_eq!(
        src_links(state, "d00/new.txt"),
        vec![1],
        "added: only the new result"
    );
    assert_eq!(src_links(state, "fresh/deep/z.txt"), vec![1]);
    assert_eq!(
        src_links(state, "d01/f0001.txt"),
        vec![1],
        "removed: only the old result"
    );
    assert_eq!(src_links(state, "gone/sub/y.txt"), vec![1]);

    // A file that became a directory: not incremental (nothing linked from the second
    // result), and still the full copy's layer.
    fs::remove_file(f.path("src/d02/f0002.txt")).expect("rm");
    f.write("src/d02/f0002.txt/inner.txt", "inner\n");
    let (third, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran.len(), 1);
    let fresh = tempfile::tempdir().expect("state");
    assert_eq!(
        build_layers(&f, fresh.path()).0,
        third,
        "the full copy's layer"
    );
    assert_eq!(
        src_links(state, "d04/f0004.txt"),
        vec![1, 2, 2],
        "the third result copied in full"
    );
}

/// Builds `f` again in `f.state` and in a fresh state directory: the incremental result (which
/// must have run `ran`) and the full copy's must be the same layers.
fn assert_incremental_is_full_copy(f: &Fixture, ran: &str) {
    let (incremental, executed) = build_layers(f, f.state.path());
    assert_eq!(executed, vec![ran.to_string()]);
    let fresh = tempfile::tempdir().expect("state");
    assert_eq!(
        build_layers(f, fresh.path()).0,
        incremental,
        "the full copy's layers"
    );
}

/// A directory outside any snapshot holding the directory `sub` with mtime 1000: what a
/// hostile symlink names.
fn host_dir(sub: &str) -> tempfile::TempDir {
    let host = tempfile::tempdir().expect("host dir");
    fs::create_dir(host.path().join(sub)).expect("mkdir");
    set_mtime(&host.path().join(sub), 1000);
    host
}

/// [`host_dir`]'s `sub` still has its time.
fn assert_host_dir_untouched(host: &tempfile::TempDir, sub: &str) {
    let m = fs::metadata(host.path().join(sub)).expect("host dir");
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&m),
        1000,
        "a host directory got the copy's times"
    );
}

/// A COPY into a destination that a lower layer has as a symlink went where the symlink points:
/// the previous result is not where the destination says, so a removed file is not found there
/// (it would stay in the image).
#[test]
fn incremental_copy_through_a_symlinked_destination_copies_in_full() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY base /\nCOPY src /app/\n");
    f.write("base/srv/keep", "k\n");
    std::os::unix::fs::symlink("srv", f.path("base/app")).expect("symlink");
    f.write("src/a.txt", "a\n");
    f.write("src/gone.txt", "gone\n");
    build_layers(&f, f.state.path());
    fs::remove_file(f.path("src/gone.txt")).expect("rm");
    // (The copy writes into `srv`, a directory of the lower layer, which then has the time
    // of the copy: two full copies differ there, so the result's files are checked.)
    let (_, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran, vec!["COPY src /app/".to_string()]);
    let with = |rel: &str| {
        fs::read_dir(f.state.path().join("snapshots"))
            .expect("snapshots")
            .filter_map(Result::ok)
            .filter(|e| fs::symlink_metadata(e.path().join("fs").join(rel)).is_ok())
            .count()
    };
    assert_eq!(
        with("srv/a.txt"),
        2,
        "both results copied through the symlink"
    );
    assert_eq!(
        with("srv/gone.txt"),
        1,
        "the removed file is only in the old result"
    );
}

/// The same with an absolute symlink to a directory of the host: nothing of the host is
/// touched (the copy resolves the destination inside the snapshot; the reuse must not walk
/// the host's path).
#[test]
fn incremental_copy_never_touches_what_an_absolute_symlink_names_on_the_host() {
    if !root_or_skip() {
        return;
    }
    let host = host_dir("sub");
    let f = Fixture::new("FROM scratch\nCOPY base /\nCOPY src /app/\n");
    fs::create_dir_all(f.path("base")).expect("mkdir");
    std::os::unix::fs::symlink(host.path(), f.path("base/app")).expect("symlink");
    f.write("src/sub/a.txt", "a\n");
    f.write("src/gone.txt", "gone\n");
    set_mtime(&f.path("src/sub"), 12345);
    build_layers(&f, f.state.path());
    fs::remove_file(f.path("src/gone.txt")).expect("rm");
    // (The copy makes the symlink's target directories inside the snapshot, with the time
    // they are made: two full copies differ there, so only the host is checked.)
    let (_, ran) = build_layers(&f, f.state.path());
    assert_eq!(ran, vec!["COPY src /app/".to_string()]);
    assert_host_dir_untouched(&host, "sub");
    assert_eq!(
        fs::read_dir(host.path()).expect("host dir").count(),
        1,
        "something was written into the host directory"
    );
}

/// Two sources with the same subdirectory: the full copy leaves it with the later source's
/// times, and so must the incremental one.
#[test]
fn incremental_copy_of_two_sources_sharing_a_directory_keeps_the_later_ones_times() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY a b /\n");
    f.write("a/sub/fa.txt", "fa\n");
    f.write("b/sub/fb.txt", "fb\n");
    set_mtime(&f.path("a/sub"), 1000);
    set_mtime(&f.path("b/sub"), 2000);
    build_layers(&f, f.state.path());
    f.write("a/sub/fa.txt", "fa edited\n");
    set_mtime(&f.path("a/sub"), 1000);
    assert_incremental_is_full_copy(&f, "COPY a b /");
}

/// A later source's symlink where an earlier source has a directory: the reuse must not set
/// times (or write) through that symlink, which names a host directory.
#[test]
fn incremental_copy_never_follows_a_later_sources_symlink_over_a_directory() {
    if !root_or_skip() {
        return;
    }
    let host = host_dir("w");
    let f = Fixture::new("FROM scratch\nCOPY a b /\n");
    f.write("a/f.txt", "f\n");
    f.write("a/z/w/inner.txt", "inner\n");
    set_mtime(&f.path("a/z/w"), 12345);
    fs::create_dir_all(f.path("b")).expect("mkdir");
    std::os::unix::fs::symlink(host.path(), f.path("b/z")).expect("symlink");
    build_layers(&f, f.state.path());
    f.write("a/f.txt", "f edited\n");
    assert_incremental_is_full_copy(&f, "COPY a b /");
    assert_host_dir_untouched(&host, "w");
}

/// A plain file in a lower layer where a directory source goes: the copy replaces it with a
/// directory given the source's times, as the full copy does.
#[test]
fn incremental_copy_over_a_lower_file_at_the_destination_gives_the_sources_times() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY base /\nCOPY src /app\n");
    f.write("base/app", "a plain file\n");
    f.write("src/a.txt", "a\n");
    set_mtime(&f.path("src"), 1_600_000_000);
    build_layers(&f, f.state.path());
    f.write("src/a.txt", "b\n");
    set_mtime(&f.path("src"), 1_600_000_000);
    assert_incremental_is_full_copy(&f, "COPY src /app");
}

/// `--chown=NAME` is resolved in the parent's filesystem, not in the previous result of the
/// same COPY (which may have brought its own /etc/passwd).
#[test]
fn incremental_copy_resolves_chown_in_the_parent() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY base /\nCOPY --chown=app src /\n");
    f.write("base/etc/passwd", "app:x:1000:1000::/:/bin/sh\n");
    f.write("src/etc/passwd", "app:x:2000:2000::/:/bin/sh\n");
    f.write("src/a.txt", "a\n");
    set_mtime(&f.path("src/etc"), 1_600_000_000);
    build_layers(&f, f.state.path());
    f.write("src/a.txt", "b\n");
    assert_incremental_is_full_copy(&f, "COPY --chown=app src /");
}

/// A lower layer's symlink to an ancestor of the destination sends the copy elsewhere, even
/// when the copy then makes a real directory of the destination's name: copied in full.
#[test]
fn incremental_copy_with_a_symlink_on_the_destinations_path_copies_in_full() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY base /\nCOPY src /app/\n");
    fs::create_dir_all(f.path("base")).expect("mkdir");
    std::os::unix::fs::symlink("/", f.path("base/app")).expect("symlink");
    fs::create_dir_all(f.path("src/app")).expect("mkdir");
    std::os::unix::fs::symlink("x", f.path("src/app/app")).expect("symlink");
    f.write("src/a.txt", "a\n");
    f.write("src/gone.txt", "gone\n");
    set_mtime(&f.path("src/app"), 1_600_000_000);
    build_layers(&f, f.state.path());
    f.write("src/new.txt", "new\n");
    fs::remove_file(f.path("src/gone.txt")).expect("rm");
    assert_incremental_is_full_copy(&f, "COPY src /app/");
}

/// [`build_layers`] with build args.
fn build_layers_with(f: &Fixture, state: &Path, args: &[(&str, &str)]) -> Vec<String> {
    let solver = Solver::new(SolverConfig::new(state)).expect("solver");
    let mut req = BuildRequest::new(f.ctx.path());
    for (k, v) in args {
        req.build_args.insert((*k).into(), (*v).into());
    }
    let out = solver.build(&req, &Recorder::default()).expect("build");
    out.config
        .rootfs
        .diff_ids
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A build arg in `--chown`, `--chmod` or the destination changes the COPY as expanded while
/// its text stays: the previous result (other owners, modes or places) is not reused.
#[test]
fn incremental_copy_is_not_used_when_a_build_arg_changes_the_copy() {
    if !root_or_skip() {
        return;
    }
    for (dockerfile, arg, before, after) in [
        (
            "FROM scratch\nARG U=1000\nCOPY --chown=$U src /app\n",
            "U",
            "1000",
            "2000",
        ),
        (
            "FROM scratch\nARG M=644\nCOPY --chmod=$M src /app\n",
            "M",
            "644",
            "600",
        ),
        (
            "FROM scratch\nARG D=/one\nCOPY src $D\n",
            "D",
            "/one",
            "/two",
        ),
    ] {
        let f = Fixture::new(dockerfile);
        f.write("src/a.txt", "a\n");
        f.write("src/b.txt", "b\n");
        set_mtime(&f.path("src"), 1_600_000_000);
        build_layers_with(&f, f.state.path(), &[(arg, before)]);
        f.write("src/a.txt", "a2\n");
        f.write("src/new.txt", "new\n");
        set_mtime(&f.path("src"), 1_600_000_000);
        let incremental = build_layers_with(&f, f.state.path(), &[(arg, after)]);
        let fresh = tempfile::tempdir().expect("state");
        assert_eq!(
            incremental,
            build_layers_with(&f, fresh.path(), &[(arg, after)]),
            "{dockerfile} with {arg}={after}: not the full copy's layers"
        );
    }
}

/// A symlink made again with the same target (a checkout does that) has a new mtime, which
/// its line does not hold: the incremental copy gives it its source's time as a full copy does.
#[test]
fn incremental_copy_gives_a_symlink_its_sources_time() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY src /src\n");
    f.write("src/a.txt", "a\n");
    f.write("src/b.txt", "b\n");
    std::os::unix::fs::symlink("a.txt", f.path("src/link")).expect("symlink");
    set_link_mtime(&f.path("src/link"), 1_600_000_000);
    set_mtime(&f.path("src"), 1_600_100_000);
    build_layers(&f, f.state.path());
    fs::remove_file(f.path("src/link")).expect("rm");
    std::os::unix::fs::symlink("a.txt", f.path("src/link")).expect("symlink");
    set_link_mtime(&f.path("src/link"), 1_700_000_000);
    f.write("src/b.txt", "b2\n");
    set_mtime(&f.path("src"), 1_600_100_000);
    assert_incremental_is_full_copy(&f, "COPY src /src");
    assert_eq!(
        src_links(f.state.path(), "a.txt"),
        vec![2, 2],
        "incremental"
    );
}

/// With `--chmod` the previous result's modes are the source's with it applied: unchanged
/// files are still linked, not written again.
#[test]
fn incremental_copy_with_chmod_links_unchanged_files() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY --chmod=600 src /src\n");
    f.write("src/a.txt", "a\n");
    f.write("src/b.txt", "b\n");
    build_layers(&f, f.state.path());
    f.write("src/b.txt", "b2\n");
    assert_incremental_is_full_copy(&f, "COPY --chmod=600 src /src");
    assert_eq!(src_links(f.state.path(), "a.txt"), vec![2, 2], "linked");
}

/// A previous result holding one inode under two names (an imported cache layer with tar hard
/// links; a copy never makes them) is not linked from: the layer would hold a hard link the
/// full copy's has not.
#[test]
fn incremental_copy_from_a_result_with_hard_links_copies_in_full() {
    if !root_or_skip() {
        return;
    }
    let f = Fixture::new("FROM scratch\nCOPY src /src\n");
    f.write("src/a.txt", "same\n");
    f.write("src/b.txt", "same\n");
    f.write("src/c.txt", "c\n");
    set_mtime(&f.path("src/a.txt"), 1_600_000_000);
    set_mtime(&f.path("src/b.txt"), 1_600_000_000);
    set_mtime(&f.path("src"), 1_600_100_000);
    build_layers(&f, f.state.path());
    let upper = fs::read_dir(f.state.path().join("snapshots"))
        .expect("snapshots")
        .filter_map(Result::ok)
        .map(|e| e.path().join("fs/src"))
        .find(|p| p.join("b.txt").exists())
        .expect("the result");
    fs::remove_file(upper.join("b.txt")).expect("rm");
    fs::hard_link(upper.join("a.txt"), upper.join("b.txt")).expect("link");
    f.write("src/c.txt", "c2\n");
    set_mtime(&f.path("src"), 1_600_100_000);
    assert_incremental_is_full_copy(&f, "COPY src /src");
}
