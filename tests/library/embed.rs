//! An embedder that does nothing special: no init hook in any `main`, the libtest harness's
//! threads (and more of its own) running, the default init binary (this test executable). The
//! RUN step's container init starts from the executor's ELF constructor; before it, the
//! re-executed test binary ran libtest's `main`, which ran no test and left the build failing
//! with "exited without reporting the command's status".

use crate::common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln::{BuildRequest, Builder, Progress, ProgressEvent};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Progress for Lines {
    fn event(&self, event: &ProgressEvent) {
        if let ProgressEvent::StepLog { line, .. } = event {
            self.0.lock().unwrap().push(line.trim_end().to_owned());
        }
    }
}

#[test]
fn run_step_builds_in_the_libtest_harness_with_threads_and_no_hook() {
    if common::not_root() {
        return;
    }
    let Some(ctx) = common::busybox_context(
        "FROM scratch\n\
         COPY busybox /busybox\n\
         RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox echo built-in-the-harness; /busybox id -u\"]\n",
    ) else {
        return;
    };
    // Threads of the embedder's own, busy while the build runs (as a tokio runtime's would be).
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        let state = common::tempdir();
        let lines = Lines::default();
        let started = Instant::now();
        let result = Builder::new(state.path()).build(&BuildRequest::new(ctx.path()), &lines);
        stop.store(true, Ordering::Relaxed);
        let image = result.expect("build with a RUN step");
        assert!(image.config_digest.starts_with("sha256:"), "{image:?}");
        let lines = lines.0.into_inner().unwrap();
        assert_eq!(lines, ["built-in-the-harness", "0"]);
        assert!(started.elapsed() < Duration::from_secs(60));
    });
}
