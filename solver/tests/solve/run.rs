//! RUN steps end to end through the public API: a real busybox base image from the loopback
//! registry of `../shared/registry-up.sh`, real containers (this test binary is the executor's
//! init), the cache on a rebuild, and the error of a failing step naming the Dockerfile line,
//! the command, the exit code and its last output.

use std::path::Path;
use std::sync::Mutex;

use kiln_solver::{BuildRequest, LogStream, Progress, ProgressEvent, Solver, SolverConfig};

const REGISTRY: &str = kiln_testkit::SHARED_REGISTRY;

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ProgressEvent>>,
}

impl Progress for Recorder {
    fn event(&self, e: &ProgressEvent) {
        self.events.lock().expect("lock").push(e.clone());
    }
}

/// Root and the shared registry, or a skip (a panic under CI).
fn can_run(test: &str) -> bool {
    kiln_testkit::require_root(test) && kiln_testkit::require_shared_registry(test)
}

type Built = (
    kiln_solver::Result<kiln_solver::BuildOutcome>,
    Vec<ProgressEvent>,
);

fn build(state: &Path, dockerfile: &str) -> Built {
    build_with(state, dockerfile, &[])
}

fn build_with(state: &Path, dockerfile: &str, files: &[(&str, &str)]) -> Built {
    let ctx = tempfile::tempdir().expect("ctx");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write");
    for (name, data) in files {
        std::fs::write(ctx.path().join(name), data).expect("write");
    }
    let mut cfg = SolverConfig::new(state);
    cfg.executor_init_binary = Some(std::env::current_exe().expect("own path"));
    let solver = Solver::new(cfg).expect("solver");
    let rec = Recorder::default();
    let r = solver.build(&BuildRequest::new(ctx.path()), &rec);
    (r, rec.events.into_inner().expect("lock"))
}

#[test]
fn failing_run_names_line_command_exit_code_and_output() {
    if !can_run("failing_run_names_line_command_exit_code_and_output") {
        return;
    }
    let dir = tempfile::tempdir().expect("state");
    let state = dir.path();
    let df = format!(
        "FROM {REGISTRY}/busybox:latest\nRUN echo first-line && echo second-line >&2 && exit 3\n"
    );
    let (r, events) = build(state, &df);
    let err = r.expect_err("the RUN fails").to_string();
    for want in [
        "Dockerfile:2",
        "/bin/sh -c echo first-line",
        "exit code: 3",
        "second-line",
    ] {
        assert!(err.contains(want), "error lacks {want:?}: {err}");
    }
    assert!(events.iter().any(|e| matches!(e, ProgressEvent::StepLog { stream: LogStream::Stderr, line, .. } if line == "second-line")));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::StepFailed { .. }))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProgressEvent::BuildFinished { success: false, .. }))
    );
}

#[test]
fn rebuild_uses_cache_and_env_reaches_run() {
    if !can_run("rebuild_uses_cache_and_env_reaches_run") {
        return;
    }
    let dir = tempfile::tempdir().expect("state");
    let state = dir.path();
    let df = format!(
        "FROM {REGISTRY}/busybox:latest\nARG V=1\nENV E=e\nRUN echo \"$V $E\" > /out && test \"$(cat /out)\" = \"1 e\"\n"
    );
    let (r, events) = build(state, &df);
    let first = r.expect("first build");
    assert_eq!(first.steps_run, 1, "{events:?}");
    let (r, events) = build(state, &df);
    let second = r.expect("second build");
    assert_eq!((second.steps_run, second.steps_cached), (0, 1));
    let started: Vec<(usize, usize, String)> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::StepStarted {
                index,
                total,
                instruction,
                ..
            } => Some((*index, *total, instruction.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(
        started
            .iter()
            .any(|(i, t, s)| *i == 2 && *t == 2 && s.starts_with("RUN echo")),
        "{started:?}"
    );
}

#[test]
fn context_bind_mount_hides_dockerignored_files() {
    if !can_run("context_bind_mount_hides_dockerignored_files") {
        return;
    }
    let dir = tempfile::tempdir().expect("state");
    let state = dir.path();
    let df = format!(
        "FROM {REGISTRY}/busybox:latest\nRUN --mount=target=/ctx test -f /ctx/keep.txt && test ! -e /ctx/secret.txt\n"
    );
    let (r, events) = build_with(
        state,
        &df,
        &[
            (".dockerignore", "secret.txt\n"),
            ("keep.txt", "k"),
            ("secret.txt", "s"),
        ],
    );
    assert!(r.is_ok(), "{:?} {events:?}", r.err());
}
