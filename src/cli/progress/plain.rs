//! `--progress=plain`: line-oriented output for logs and CI, in the classic `docker build`
//! vocabulary (`Step N/M : ...`, ` ---> Using cache`), every output line prefixed by its step
//! number and its time into the step (`#3 0.215 ...`), since parallel steps interleave.
//! Also `quiet`, which prints nothing but the error report.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kiln::{Progress, ProgressEvent};

use super::report::{DockerfileSource, build_error_report, step_report};
use super::{Clock, Renderer, Sink, StepStatus, StepTable, familiar, lock, secs};

struct State {
    table: StepTable,
    out: Sink,
    /// Position of the step the last printed line belonged to.
    last: Option<usize>,
}

/// The plain renderer.
pub(crate) struct Plain {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    source: Option<Arc<DockerfileSource>>,
}

impl Plain {
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        clock: Arc<dyn Clock>,
        source: Option<Arc<DockerfileSource>>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                table: StepTable::default(),
                out: Sink(out),
                last: None,
            }),
            clock,
            source,
        }
    }
}

/// ` (step 2/3)` when the line does not follow its step's own lines, so interleaved parallel
/// steps stay readable.
fn whose(st: &State, pos: usize) -> String {
    if st.last == Some(pos) {
        String::new()
    } else {
        let s = &st.table.steps[pos];
        format!(" (step {}/{})", s.index, s.total)
    }
}

impl Progress for Plain {
    fn event(&self, event: &ProgressEvent) {
        let now = self.clock.now();
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let pos = st.table.apply(event, now);
        let text = match (event, pos) {
            (
                ProgressEvent::StepStarted {
                    index,
                    total,
                    instruction,
                    ..
                },
                Some(_),
            ) => {
                format!("Step {index}/{total} : {instruction}\n")
            }
            (ProgressEvent::StepLog { .. }, Some(p)) => {
                let s = &st.table.steps[p];
                let (at, line) = s.logs.back().cloned().unwrap_or_default();
                format!("#{} {:.3} {line}\n", s.index, at.as_secs_f64())
            }
            (ProgressEvent::StepCached { .. }, Some(p)) => {
                format!(" ---> Using cache{}\n", whose(st, p))
            }
            (ProgressEvent::StepDone { elapsed, .. }, Some(p)) => {
                format!(" ---> Done {}{}\n", secs(*elapsed), whose(st, p))
            }
            (ProgressEvent::StepFailed { .. }, Some(p)) => format!(" ---> Error{}\n", whose(st, p)),
            (ProgressEvent::Warning { message }, _) => format!("warning: {message}\n"),
            (
                ProgressEvent::ImageWritten {
                    config_digest,
                    names,
                    ..
                },
                _,
            ) => {
                let short = config_digest
                    .strip_prefix("sha256:")
                    .unwrap_or(config_digest);
                let mut t = format!(
                    "Successfully built {}\n",
                    short.chars().take(12).collect::<String>()
                );
                for n in names {
                    let _ = writeln!(t, "Successfully tagged {}", familiar(n));
                }
                t
            }
            (ProgressEvent::BuildFinished { success, elapsed }, _) => {
                let (done, cached) = st.table.counts();
                if *success {
                    format!(
                        "Build finished in {}: {done} steps, {cached} cached\n",
                        secs(*elapsed)
                    )
                } else {
                    // Steps still running when the build ended were cancelled (by a failing
                    // step, or by SIGINT/SIGTERM), as BuildKit's `#N CANCELED`.
                    let mut t = String::new();
                    for p in 0..st.table.steps.len() {
                        if st.table.steps[p].status == StepStatus::Running {
                            let _ = writeln!(t, " ---> CANCELED{}", whose(st, p));
                            st.last = Some(p);
                        }
                    }
                    let _ = writeln!(t, "Build failed after {}", secs(*elapsed));
                    t
                }
            }
            _ => String::new(),
        };
        if !matches!(event, ProgressEvent::BuildStarted { .. }) {
            st.last = pos;
        }
        st.out.emit(&text);
    }
}

/// Prints the report of the failed step, or the error itself when no step failed.
fn print_failure(
    table: &StepTable,
    out: &mut Sink,
    error: &kiln::Error,
    source: Option<&DockerfileSource>,
) {
    let text = match table.failed.map(|p| &table.steps[p]) {
        Some(step) => {
            let StepStatus::Failed(msg) = &step.status else {
                return;
            };
            step_report(step, msg, source, false, false)
        }
        None => build_error_report(error, source, false),
    };
    out.emit(&text);
}

impl Renderer for Plain {
    fn as_progress(&self) -> &dyn Progress {
        self
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if let Some(e) = error {
            print_failure(&st.table, &mut st.out, e, self.source.as_deref());
        }
    }
}

/// `--progress=quiet` / `-q`: nothing while building; the report if the build fails.
pub(crate) struct Quiet {
    state: Mutex<(StepTable, Sink)>,
    clock: Arc<dyn Clock>,
    source: Option<Arc<DockerfileSource>>,
}

impl Quiet {
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        clock: Arc<dyn Clock>,
        source: Option<Arc<DockerfileSource>>,
    ) -> Self {
        Self {
            state: Mutex::new((StepTable::default(), Sink(out))),
            clock,
            source,
        }
    }
}

impl Progress for Quiet {
    fn event(&self, event: &ProgressEvent) {
        let now = self.clock.now();
        lock(&self.state).0.apply(event, now);
    }
}

impl Renderer for Quiet {
    fn as_progress(&self) -> &dyn Progress {
        self
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        let mut guard = lock(&self.state);
        let (table, out) = &mut *guard;
        if let Some(e) = error {
            print_failure(table, out, e, self.source.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kiln::StepId;

    use super::*;
    use crate::cli::progress::testing::{Buffer, DOCKERFILE, ManualClock, done, log, started};

    fn plain() -> (Plain, Buffer, Arc<ManualClock>) {
        let buf = Buffer::default();
        let clock = Arc::new(ManualClock::default());
        let source = DockerfileSource {
            name: "Dockerfile".into(),
            text: DOCKERFILE.into(),
        };
        let p = Plain::new(Box::new(buf.clone()), clock.clone(), Some(Arc::new(source)));
        (p, buf, clock)
    }

    #[test]
    fn steps_still_running_when_the_build_fails_are_shown_canceled() {
        let (p, buf, clock) = plain();
        p.event(&ProgressEvent::BuildStarted { total_steps: 2 });
        p.event(&started(0, 1, "COPY hello.txt /", 2));
        p.event(&done(0, 10));
        p.event(&started(1, 2, "RUN sleep 100", 3));
        clock.set_ms(2000);
        p.event(&ProgressEvent::BuildFinished {
            success: false,
            elapsed: Duration::from_secs(2),
        });
        let text = buf.text();
        assert!(
            text.ends_with("Step 2/3 : RUN sleep 100\n ---> CANCELED\nBuild failed after 2.0s\n"),
            "{text}"
        );
    }

    #[test]
    fn a_successful_build_in_classic_vocabulary() {
        let (p, buf, clock) = plain();
        p.event(&ProgressEvent::BuildStarted { total_steps: 3 });
        p.event(&started(0, 1, "FROM scratch", 1));
        p.event(&ProgressEvent::StepCached { step: StepId(0) });
        p.event(&started(1, 2, "COPY hello.txt /", 2));
        p.event(&ProgressEvent::StepCached { step: StepId(1) });
        clock.set_ms(100);
        p.event(&started(2, 3, "RUN echo hi", 3));
        clock.set_ms(350);
        p.event(&log(2, "hi"));
        p.event(&done(2, 412));
        p.event(&ProgressEvent::Warning {
            message: "build arg `FOO` was not consumed".into(),
        });
        p.event(&ProgressEvent::ImageWritten {
            manifest_digest: "sha256:aaaa".into(),
            config_digest: "sha256:0123456789abcdef0123".into(),
            names: vec!["docker.io/library/hello:latest".into()],
        });
        p.event(&ProgressEvent::BuildFinished {
            success: true,
            elapsed: Duration::from_millis(1234),
        });
        p.finish(None);
        assert_eq!(
            buf.text(),
            "Step 1/3 : FROM scratch\n ---> Using cache\nStep 2/3 : COPY hello.txt /\n ---> Using cache\n\
             Step 3/3 : RUN echo hi\n#3 0.250 hi\n ---> Done 0.4s\nwarning: build arg `FOO` was not consumed\n\
             Successfully built 0123456789ab\nSuccessfully tagged hello:latest\n\
             Build finished in 1.2s: 3 steps, 2 cached\n"
        );
    }

    #[test]
    fn interleaved_steps_name_their_step() {
        let (p, buf, _) = plain();
        p.event(&started(1, 2, "RUN a", 2));
        p.event(&started(2, 3, "RUN b", 3));
        p.event(&log(1, "from a"));
        p.event(&log(2, "from b"));
        p.event(&done(1, 1000));
        p.event(&ProgressEvent::StepCached { step: StepId(2) });
        assert_eq!(
            buf.text(),
            "Step 2/3 : RUN a\nStep 3/3 : RUN b\n#2 0.000 from a\n#3 0.000 from b\n ---> Done 1.0s (step 2/3)\n ---> Using cache (step 3/3)\n"
        );
    }

    #[test]
    fn a_failed_step_prints_the_buildkit_style_report() {
        let (p, buf, clock) = plain();
        p.event(&started(2, 3, "RUN echo hi && false", 3));
        clock.set_ms(20);
        p.event(&log(2, "hi"));
        let error =
            "process \"/bin/sh -c echo hi && false\" did not complete successfully: exit code: 1";
        p.event(&ProgressEvent::StepFailed {
            step: StepId(2),
            error: error.into(),
        });
        p.event(&ProgressEvent::BuildFinished {
            success: false,
            elapsed: Duration::from_millis(30),
        });
        p.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: error.into(),
        }));
        assert_eq!(
            buf.text(),
            "Step 3/3 : RUN echo hi && false\n#3 0.020 hi\n ---> Error\nBuild failed after 0.0s\n\
             ------\n > [3/3] RUN echo hi && false:\n0.020 hi\n------\nDockerfile:3\n--------------------\n   2 |     COPY hello.txt /\n   3 | >>> RUN echo hi && \\\n   4 | >>>     false\n   5 |     CMD [\"/hello\"]\n--------------------\n\
             error: process \"/bin/sh -c echo hi && false\" did not complete successfully: exit code: 1\n"
        );
    }

    #[test]
    fn an_error_outside_any_step_is_printed_alone() {
        let (p, buf, _) = plain();
        p.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "Dockerfile:2:5: unknown instruction `RUNN`".into(),
        }));
        assert_eq!(
            buf.text(),
            "error: Dockerfile:2:5: unknown instruction `RUNN`\n"
        );
    }

    #[test]
    fn quiet_prints_only_the_failure() {
        let buf = Buffer::default();
        let q = Quiet::new(
            Box::new(buf.clone()),
            Arc::new(ManualClock::default()),
            None,
        );
        q.event(&started(0, 1, "RUN x", 1));
        q.event(&log(0, "noise"));
        assert_eq!(buf.text(), "");
        q.event(&ProgressEvent::StepFailed {
            step: StepId(0),
            error: "exit code: 2".into(),
        });
        q.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "exit code: 2".into(),
        }));
        assert_eq!(
            buf.text(),
            "------\n > [1/3] RUN x:\n0.000 noise\n------\nerror: exit code: 2\n"
        );
    }
}
