//! Cancelling a build through the library facade (issue 12): `Builder::build_cancellable` with
//! a `kiln::CancelHandle` cancelled from another thread stops a running `RUN`, reports
//! `BuildFinished { success: false }` and leaves no temporary snapshot, mount or run directory.
//! The library installs no signal handler of its own.

use crate::{Recorder, common};

use std::time::{Duration, Instant};

use common::busybox_context;
use kiln::{BuildRequest, Builder, CancelHandle, ProgressEvent};

#[test]
fn issue12_a_cancel_handle_stops_a_running_build_and_releases_everything() {
    if common::not_root() {
        return;
    }
    let Some(ctx) = busybox_context(
        "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sleep\", \"30\"]\n",
    ) else {
        return;
    };
    let state = common::tempdir();
    let builder = Builder::new(state.path()).init_binary(env!("CARGO_BIN_EXE_kiln"));
    let options = BuildRequest::new(ctx.path());
    let cancel = CancelHandle::new();
    let stop = cancel.clone();
    let runs = state.path().join("executor");
    let watcher = std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let running =
                std::fs::read_dir(&runs).is_ok_and(|d| d.filter_map(Result::ok).count() > 0);
            if running {
                std::thread::sleep(Duration::from_millis(300));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.cancel();
        Instant::now()
    });
    let progress = Recorder::default();
    let result = builder.build_cancellable(&options, &progress, &cancel);
    let cancelled_at = watcher.join().unwrap();
    let err = result.expect_err("a cancelled build fails");
    assert!(err.is_cancelled(), "{err}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "the RUN was not killed"
    );
    let events = progress.0.lock().unwrap();
    assert!(
        matches!(
            events.last(),
            Some(ProgressEvent::BuildFinished { success: false, .. })
        ),
        "{:?}",
        events.last()
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ProgressEvent::StepFailed { .. })),
        "a cancelled step is not a failed one"
    );
    let active: Vec<_> = std::fs::read_dir(state.path().join("snapshots/active"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(active.is_empty(), "{active:?}");
    let runs: Vec<_> = std::fs::read_dir(state.path().join("executor"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(runs.is_empty(), "{runs:?}");
    // A handle that was cancelled cancels the next build at once.
    let t0 = Instant::now();
    let again = builder.build_cancellable(&options, &kiln::NoProgress, &cancel);
    assert!(again.is_err_and(|e| e.is_cancelled()));
    assert!(t0.elapsed() < Duration::from_secs(2));
}
