//! Issue 12, "nothing lost, nothing leaked", through the `kiln` binary: concurrent identical
//! builds on one state directory, a state directory on a full tmpfs, SIGKILL during `COPY --from`
//! and SIGINT/SIGTERM during a `RUN`. Each test pins down a failure measured on the code before
//! the fix (commit race, leaked active snapshot, leaked overlay mounts, no signal handler).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::screen::Screen;
use common::{busybox_context, kiln, not_root, snapshot_keys, tempdir, text, write_files};

/// Mount points (from /proc/self/mountinfo) at or below any of `dirs`.
fn mounts_below(dirs: &[&Path]) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| dirs.iter().any(|d| Path::new(p).starts_with(d)))
        .collect()
}

/// Entries of `dir` whose names start with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        },
    )
}

#[test]
fn issue12_eight_concurrent_identical_builds_on_a_fresh_state_dir_all_succeed() {
    if not_root() {
        return;
    }
    let ctx = tempdir();
    let files: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("file {i}\n").repeat(100 * (i + 1)),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    write_files(ctx.path(), &refs);
    let df: String = std::iter::once("FROM scratch\n".to_string())
        .chain((0..5).map(|i| format!("COPY f{i}.txt /d{i}/f.txt\n")))
        .collect();
    std::fs::write(ctx.path().join("Dockerfile"), df).expect("write Dockerfile");
    let started = Instant::now();
    let mut failures = Vec::new();
    for round in 0..10 {
        let state = tempdir();
        let children: Vec<Child> = (0..8)
            .map(|_| {
                kiln(&state)
                    .args(["build", "--progress=plain"])
                    .arg(ctx.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn kiln")
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().expect("wait for kiln");
            let (_, err) = text(&out);
            if !out.status.success() {
                failures.push(format!("round {round}: {err}"));
            }
        }
    }
    eprintln!(
        "80 concurrent builds in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of 80 builds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A tmpfs mounted on a fresh directory for the life of the guard.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Option<Self> {
        let dir = tempdir();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            common::skip("cannot mount a tmpfs");
            return None;
        }
        Some(Self(dir))
    }

    fn free_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(self.0.path()).expect("statvfs");
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn issue12_a_full_64m_tmpfs_state_dir_recovers_after_prune() {
    if not_root() {
        return;
    }
    let Some(cached) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"echo hi > /hi\"]\n",
    ) else {
        return;
    };
    let Some(fill) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"dd\", \"if=/dev/zero\", \"of=/fill\", \"bs=1M\"]\n",
    ) else {
        return;
    };
    let Some(fs) = Tmpfs::new("64m") else {
        return;
    };
    let state = fs.0.path().join("state");
    let run = |ctx: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", &state)
            .env("NO_COLOR", "1")
            .args(extra)
            .arg(ctx)
            .output()
            .expect("run kiln")
    };
    let build = ["build", "--progress=plain"];
    let out = run(cached.path(), &build);
    assert!(out.status.success(), "{}", text(&out).1);
    let free_before = fs.free_bytes();

    let out = run(fill.path(), &build);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "filling the disk must fail:\n{err}");
    assert!(err.contains("No space left on device"), "{err}");

    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", &state)
        .arg("prune")
        .output()
        .expect("run kiln prune");
    let prune_time = t0.elapsed();
    assert!(
        out.status.success(),
        "prune on a full disk: {}",
        text(&out).1
    );
    let free_after = fs.free_bytes();
    eprintln!(
        "full 64 MiB tmpfs: {} KiB free before the filling build, {} KiB after prune ({:.2}s)",
        free_before / 1024,
        free_after / 1024,
        prune_time.as_secs_f64()
    );
    assert!(
        free_after + 1024 * 1024 >= free_before,
        "prune left {free_after} bytes free, {free_before} before the filling build"
    );
    let leftovers: Vec<String> = snapshot_keys(&state)
        .into_iter()
        .filter(|k| !k.starts_with("step-") && !k.starts_with("layer-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = run(cached.path(), &build);
    let (_, err) = text(&out);
    assert!(out.status.success(), "cached rebuild after prune: {err}");
    assert_eq!(err.matches(" ---> Using cache").count(), 2, "{err}");

    // A build SIGKILLed while its RUN fills the disk leaves a full disk and its active
    // snapshot: the next start (here `kiln prune`) removes it without writing first.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", &state)
        .args(build)
        .arg(fill.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln");
    let full = wait_for(Duration::from_secs(60), || fs.free_bytes() < 256 * 1024);
    let _ = child.kill();
    let _ = child.wait();
    assert!(full, "the RUN never filled the disk");
    // The next start removes the killed build's active snapshot. Its container dies with kiln
    // (parent-death signal) and the kernel drops the container's overlay, which holds the
    // unlinked files, a moment later: the space comes back then.
    let t_kill = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", &state)
        .arg("prune")
        .output()
        .expect("run kiln prune");
    let took = t_kill.elapsed();
    assert!(out.status.success(), "prune after a kill: {}", text(&out).1);
    let freed = wait_for(Duration::from_secs(5), || {
        fs.free_bytes() + 1024 * 1024 >= free_before
    });
    let recovered = t_kill.elapsed();
    assert!(
        freed,
        "{} KiB free\n{}\n{:?}",
        fs.free_bytes() / 1024,
        String::from_utf8_lossy(
            &Command::new("du")
                .args(["-a", "-k"])
                .arg(&state)
                .output()
                .expect("du")
                .stdout
        ),
        std::fs::read_to_string(state.join("snapshots/metadata.json"))
    );
    eprintln!(
        "SIGKILL with a full disk: prune took {:.3}s, disk free again {:.3}s after the kill",
        took.as_secs_f64(),
        recovered.as_secs_f64()
    );
    let out = run(cached.path(), &build);
    let (_, err) = text(&out);
    assert!(out.status.success(), "cached rebuild after a kill: {err}");
}

/// Waits until `pred` holds (polling every few milliseconds) or `limit` passes.
fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn issue12_sigkill_during_copy_from_leaves_no_mount_after_the_next_start() {
    if not_root() {
        return;
    }
    // Stage 0 makes a big tree; the last stage copies it, so a view of stage 0 (and the
    // active snapshot of the copy) are mounted for a while.
    let Some(ctx) = busybox_context(
        "FROM scratch AS src\nCOPY busybox /busybox\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox mkdir /d && cd /d && for i in $(/busybox seq 4000); do echo $i > $i; done\"]\n\
         FROM scratch\nCOPY --from=src /d /d\n",
    ) else {
        return;
    };
    let state = tempdir();
    let tmp = tempdir();
    let out = kiln(&state)
        .args(["build", "--progress=plain", "--target=src"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let mut kills = 0;
    let mut recoveries = Vec::new();
    for attempt in 0..20 {
        if kills == 3 {
            break;
        }
        let mut child = kiln(&state)
            .env("TMPDIR", tmp.path())
            .args(["build", "--progress=plain", "--no-cache-filter=1"])
            .arg(ctx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kiln");
        let dirs = [state.path(), tmp.path()];
        let seen = wait_for(Duration::from_secs(30), || {
            !mounts_below(&dirs).is_empty() || child.try_wait().ok().flatten().is_some()
        });
        let _ = child.kill();
        let _ = child.wait();
        if !seen || mounts_below(&dirs).is_empty() {
            eprintln!("attempt {attempt}: build ended before a mount was seen");
            continue;
        }
        kills += 1;
        // The next kiln start cleans up what the killed one left.
        let t0 = Instant::now();
        let out = kiln(&state).arg("prune").output().expect("run kiln prune");
        recoveries.push(t0.elapsed());
        assert!(out.status.success(), "{}", text(&out).1);
        let left = mounts_below(&dirs);
        assert!(left.is_empty(), "mounts left after a SIGKILL: {left:?}");
        let out = kiln(&state)
            .args(["build", "--progress=plain"])
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        assert!(out.status.success(), "{}", text(&out).1);
        let tmp_files: Vec<String> = entries(&state.path().join("snapshots/tmp"), "");
        assert!(tmp_files.is_empty(), "{tmp_files:?}");
        let active: Vec<String> = snapshot_keys(state.path())
            .into_iter()
            .filter(|k| k.starts_with("active-") || k.starts_with("view-"))
            .collect();
        assert!(active.is_empty(), "{active:?}");
    }
    assert!(kills >= 1, "never caught the build with a mount");
    eprintln!(
        "SIGKILL during COPY --from: {kills} kills, the next start (kiln prune) took {recoveries:?}"
    );
}

/// Starts `kiln build` of a `RUN sleep 30` and returns the child and a channel of its stderr
/// lines, once the RUN's container runs.
fn start_sleeping_build(
    state: &tempfile::TempDir,
    ctx: &Path,
    progress: &str,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = kiln(state)
        .args(["build", &format!("--progress={progress}")])
        .arg(ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let runs = state.path().join("executor");
    let running = wait_for(Duration::from_secs(30), || {
        !entries(&runs, "run-").is_empty()
    });
    assert!(running, "the RUN never started");
    // Let the container's process start.
    std::thread::sleep(Duration::from_millis(300));
    (child, rx)
}

/// Every line the reader thread got, until the child's stderr closes (at most 10 s).
fn drain(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while let Some(left) = Duration::from_secs(10).checked_sub(t0.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => break,
        }
    }
    out
}

fn send(child: &Child, sig: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill");
}

fn assert_nothing_left(state: &Path) {
    let active: Vec<String> = snapshot_keys(state)
        .into_iter()
        .filter(|k| k.starts_with("active-") || k.starts_with("view-"))
        .collect();
    assert!(active.is_empty(), "snapshots left: {active:?}");
    let runs = entries(&state.join("executor"), "run-");
    assert!(runs.is_empty(), "run dirs left: {runs:?}");
    let left = mounts_below(&[state]);
    assert!(left.is_empty(), "mounts left: {left:?}");
}

fn sleep_context() -> Option<tempfile::TempDir> {
    busybox_context("FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sleep\", \"30\"]\n")
}

#[test]
fn issue12_sigint_during_run_prints_canceled_exits_130_and_leaves_nothing() {
    if not_root() {
        return;
    }
    let Some(ctx) = sleep_context() else { return };
    let state = tempdir();
    let (mut child, rx) = start_sleeping_build(&state, ctx.path(), "plain");
    let t0 = Instant::now();
    send(&child, libc::SIGINT);
    let status = child.wait().expect("wait");
    let took = t0.elapsed();
    let err = drain(&rx).join("\n");
    eprintln!("SIGINT to exit: {:.2}s", took.as_secs_f64());
    assert_eq!(status.code(), Some(130), "{status:?}\n{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(err.contains("CANCELED"), "{err}");
    assert_nothing_left(state.path());
}

#[test]
fn issue12_sigterm_during_run_reports_build_finished_failure_in_json_and_exits_143() {
    if not_root() {
        return;
    }
    let Some(ctx) = sleep_context() else { return };
    let state = tempdir();
    let (mut child, rx) = start_sleeping_build(&state, ctx.path(), "json");
    let t0 = Instant::now();
    send(&child, libc::SIGTERM);
    let status = child.wait().expect("wait");
    let took = t0.elapsed();
    let lines = drain(&rx);
    eprintln!("SIGTERM to exit: {:.2}s", took.as_secs_f64());
    assert_eq!(status.code(), Some(143), "{status:?}\n{lines:?}");
    let finished = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "build_finished" || v["type"] == "build_finished");
    let finished = finished.unwrap_or_else(|| panic!("no build_finished event: {lines:?}"));
    assert_eq!(finished["success"], false, "{finished}");
    assert_nothing_left(state.path());
}

#[test]
fn issue12_second_sigint_exits_at_once() {
    if not_root() {
        return;
    }
    let Some(ctx) = sleep_context() else { return };
    let state = tempdir();
    let (mut child, _rx) = start_sleeping_build(&state, ctx.path(), "plain");
    send(&child, libc::SIGINT);
    send(&child, libc::SIGINT);
    let t0 = Instant::now();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Whatever the hurried exit left, the next start removes.
    let out = kiln(&state).arg("prune").output().expect("run kiln prune");
    assert!(out.status.success(), "{}", text(&out).1);
    assert_nothing_left(state.path());
}

/// Everything a killed build could leave in `state`, as "what: names".
fn leftovers(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, names: Vec<String>| {
        if !names.is_empty() {
            out.push(format!("{what}: {names:?}"));
        }
    };
    let snaps = state.join("snapshots");
    check("snapshots/tmp/", entries(&snaps.join("tmp"), ""));
    check(
        "active/view snapshots",
        snapshot_keys(state)
            .into_iter()
            .filter(|k| !k.starts_with("step-") && !k.starts_with("layer-"))
            .collect(),
    );
    check("mounts", mounts_below(&[state]));
    check(
        "mount points",
        entries(&state.join("mounts"), "")
            .into_iter()
            .filter(|n| n != "cache")
            .collect(),
    );
    check("tmp/", entries(&state.join("tmp"), ""));
    check("cache/.tmp", entries(&state.join("cache"), ".tmp"));
    check("executor/run-", entries(&state.join("executor"), "run-"));
    check(
        "layer temp files",
        entries(&state.join("content/blobs/sha256"), ".kiln-layer-"),
    );
    out
}

#[test]
fn issue12_random_sigkills_leave_nothing_after_the_next_start() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(
        "FROM scratch AS src\nCOPY busybox /busybox\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox mkdir /d && cd /d && for i in $(/busybox seq 300); do echo $i > $i; done\"]\n\
         FROM scratch\nCOPY --from=src /busybox /busybox\nCOPY --from=src /d /d\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"echo done > /done\"]\n",
    ) else {
        return;
    };
    let state = tempdir();
    let t0 = Instant::now();
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let full = t0.elapsed();
    let mut recoveries = Vec::new();
    for i in 0..20u32 {
        let mut child = kiln(&state)
            .args(["build", "--progress=plain", "--no-cache"])
            .arg(ctx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kiln");
        // Spread the kills over the whole build (a fixed, varied sequence, not a seed).
        let at = full.mul_f64(f64::from((i * 7919) % 20) / 20.0);
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        // The next start: a cached build (it must work), then a prune (it reaps run dirs).
        let t = Instant::now();
        let out = kiln(&state)
            .args(["build", "--progress=plain"])
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        recoveries.push(t.elapsed());
        assert!(out.status.success(), "after kill {i}: {}", text(&out).1);
        let out = kiln(&state).arg("prune").output().expect("run kiln prune");
        assert!(out.status.success(), "{}", text(&out).1);
        // The kernel drops a killed container's mounts a moment after it dies.
        let mut left = leftovers(state.path());
        if !left.is_empty() {
            eprintln!("kill {i}: first pass left {left:?}");
            std::thread::sleep(Duration::from_millis(200));
            let _ = kiln(&state).arg("prune").output();
            left = leftovers(state.path());
        }
        assert!(left.is_empty(), "kill {i} after {at:?} left {left:?}");
    }
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let max = recoveries.iter().max().copied().unwrap_or_default();
    let sum: Duration = recoveries.iter().sum();
    eprintln!(
        "20 random SIGKILLs over a {:.2}s build: next start (a cached build) {:.3}s mean, {:.3}s max",
        full.as_secs_f64(),
        sum.as_secs_f64() / 20.0,
        max.as_secs_f64()
    );
}

#[test]
fn issue12_sigkill_with_a_stdin_context_leaves_no_temp_dir_after_the_next_start() {
    if not_root() {
        return;
    }
    let Some(ctx) = sleep_context() else { return };
    let state = tempdir();
    let tmp = tempdir();
    let archive = Command::new("tar")
        .arg("-C")
        .arg(ctx.path())
        .args(["-c", "."])
        .output()
        .expect("run tar");
    assert!(archive.status.success());
    let mut child = kiln(&state)
        .env("TMPDIR", tmp.path())
        .args(["build", "--progress=plain", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&archive.stdout).expect("write the context");
    }
    let runs = state.path().join("executor");
    let running = wait_for(Duration::from_secs(30), || {
        !entries(&runs, "run-").is_empty()
    });
    assert!(running, "the RUN never started");
    let _ = child.kill();
    let _ = child.wait();
    let out = kiln(&state).arg("prune").output().expect("run kiln prune");
    assert!(out.status.success(), "{}", text(&out).1);
    let left = leftovers(state.path());
    assert!(left.is_empty(), "{left:?}");
    let in_tmp = entries(tmp.path(), "");
    assert!(in_tmp.is_empty(), "left in $TMPDIR: {in_tmp:?}");
}

#[test]
fn issue12_sigint_on_a_terminal_shows_the_step_canceled() {
    use std::io::Read as _;
    if not_root() {
        return;
    }
    let Some(ctx) = sleep_context() else { return };
    let state = tempdir();
    let (master, slave) = common::openpty(80, 24);
    let mut cmd = kiln(&state);
    cmd.args(["build", "--progress=tty"])
        .arg(ctx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn kiln");
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let runs = state.path().join("executor");
    assert!(
        wait_for(Duration::from_secs(30), || !entries(&runs, "run-")
            .is_empty()),
        "the RUN never started"
    );
    std::thread::sleep(Duration::from_millis(300));
    send(&child, libc::SIGINT);
    let status = child.wait().expect("wait");
    let written = reader.join().expect("reader");
    let mut screen = Screen::new(80);
    screen.feed(&written);
    let text = screen.text();
    assert_eq!(status.code(), Some(130), "{text}");
    let run_line = text
        .lines()
        .find(|l| l.contains("RUN [\"/busybox\", \"sleep\", \"30\"]"))
        .unwrap_or_default();
    assert!(run_line.ends_with("CANCELED"), "{text}");
    assert_nothing_left(state.path());
}
