//! Progress renderers of `kiln build`: `tty` (live display), `plain` (line-oriented, CI),
//! `json` (one object per event per line) and `quiet` (only the image id). Each implements
//! [`kiln::Progress`] so the library drives it directly; [`Renderer::finish`] prints what
//! belongs after the last event (the error report of a failed build). This module also holds the
//! state every renderer keeps ([`StepTable`]) and the clock they read (injectable for tests).

pub(crate) mod diag;
mod json;
mod plain;
mod report;
mod tty;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln::{Progress, ProgressEvent, StepId};

pub(crate) use report::DockerfileSource;

/// The resolved progress format (after `auto` and `-q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressFormat {
    /// Live display on a terminal.
    Tty,
    /// Line-oriented.
    Plain,
    /// JSON lines.
    Json,
    /// Nothing but errors (the image id is printed by the caller).
    Quiet,
}

/// A progress sink the CLI can also tell that the build is over.
pub(crate) trait Renderer: Send + Sync {
    /// The sink to hand to the library.
    fn as_progress(&self) -> &dyn Progress;
    /// Called once after the build returned: prints the error report when it failed.
    fn finish(&self, error: Option<&kiln::Error>);
    /// How diagnostic lines (`--debug`) are shown while this renderer draws; `None`: they go
    /// to stderr as they are (line-oriented renderers write whole lines, so nothing tears).
    fn diagnostics(&self) -> Option<diag::Hook> {
        None
    }
}

/// Creates the renderer for `format`, writing to stderr.
/// With `explain` (`--explain`), plain and tty show why each step that runs missed the cache.
pub(crate) fn renderer(
    format: ProgressFormat,
    source: Option<Arc<DockerfileSource>>,
    explain: bool,
) -> Box<dyn Renderer> {
    let clock: Arc<dyn Clock> = Arc::new(WallClock(Instant::now()));
    let out: Box<dyn Write + Send> = Box::new(std::io::stderr());
    let inner: Box<dyn Renderer> = match format {
        ProgressFormat::Plain => Box::new(plain::Plain::new(out, clock, source)),
        ProgressFormat::Json => return Box::new(json::Json::new(out)),
        ProgressFormat::Quiet => return Box::new(plain::Quiet::new(out, clock, source)),
        ProgressFormat::Tty => {
            return Box::new(
                tty::Tty::live(out, clock, source, color_enabled()).with_explain(explain),
            );
        }
    };
    if explain {
        Box::new(Explained(inner))
    } else {
        inner
    }
}

/// Shows a running step's cache-miss reason as its first output line (`cache miss: ...`), for
/// plain output.
struct Explained(Box<dyn Renderer>);

impl Progress for Explained {
    fn event(&self, event: &ProgressEvent) {
        let inner = self.0.as_progress();
        inner.event(event);
        if let ProgressEvent::StepStarted {
            step,
            reason: Some(reason),
            ..
        } = event
        {
            inner.event(&ProgressEvent::StepLog {
                step: *step,
                stream: kiln::LogStream::Stderr,
                line: format!("cache miss: {reason}"),
            });
        }
    }
}

impl Renderer for Explained {
    fn as_progress(&self) -> &dyn Progress {
        self
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        self.0.finish(error);
    }
}

/// `NO_COLOR` (any non-empty value) turns colors off, per no-color.org.
fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Time since the build started; a trait so tests can drive time by hand.
pub(crate) trait Clock: Send + Sync {
    /// Elapsed time since the start of the build.
    fn now(&self) -> Duration;
}

struct WallClock(Instant);

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A name as docker shows it: `hello:latest` rather than `docker.io/library/hello:latest`.
pub(crate) fn familiar(name: &str) -> &str {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short
        .strip_prefix("library/")
        .filter(|s| !s.contains('/'))
        .unwrap_or(short)
}

/// Formats a duration as BuildKit does: seconds with one decimal.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Lines of a step's output kept for the error report; older ones are counted, not kept.
const MAX_KEPT_LINES: usize = 10_000;

/// Where a step is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepStatus {
    /// Running (or being looked up in the cache).
    Running,
    /// Reused from the cache.
    Cached,
    /// Finished after running for this long.
    Done(Duration),
    /// Failed with this error.
    Failed(String),
}

/// What a renderer remembers about one step.
#[derive(Debug, Clone)]
pub(crate) struct StepInfo {
    pub(crate) index: usize,
    pub(crate) total: usize,
    pub(crate) stage: String,
    pub(crate) instruction: String,
    pub(crate) line: usize,
    pub(crate) started: Duration,
    pub(crate) status: StepStatus,
    /// (time since the step started, line)
    pub(crate) logs: VecDeque<(Duration, String)>,
    pub(crate) dropped_logs: usize,
    /// Why the step missed the cache (for a step that ran), shown with `--explain`.
    pub(crate) reason: Option<String>,
}

impl StepInfo {
    /// `[2/5]` or, for a named stage, `[build 2/5]`.
    pub(crate) fn label(&self) -> String {
        if self.stage.is_empty() || self.stage.parse::<usize>().is_ok() {
            format!("[{}/{}]", self.index, self.total)
        } else {
            format!("[{} {}/{}]", self.stage, self.index, self.total)
        }
    }

    /// How long the step has been running (or ran).
    pub(crate) fn elapsed(&self, now: Duration) -> Duration {
        match self.status {
            StepStatus::Done(d) => d,
            StepStatus::Cached => Duration::ZERO,
            StepStatus::Running | StepStatus::Failed(_) => now.saturating_sub(self.started),
        }
    }
}

/// The state of a build as seen through its events; shared by every renderer.
#[derive(Debug, Default)]
pub(crate) struct StepTable {
    /// Steps in the order they started.
    pub(crate) steps: Vec<StepInfo>,
    by_id: HashMap<StepId, usize>,
    pub(crate) total: usize,
    pub(crate) warnings: Vec<String>,
    /// (config digest, names) once the image is written.
    pub(crate) image: Option<(String, Vec<String>)>,
    /// (success, elapsed) once the build finished.
    pub(crate) finished: Option<(bool, Duration)>,
    /// Step that failed first.
    pub(crate) failed: Option<usize>,
}

impl StepTable {
    /// Records `event` at time `now`; returns the position of the step it concerns, if any.
    pub(crate) fn apply(&mut self, event: &ProgressEvent, now: Duration) -> Option<usize> {
        match event {
            ProgressEvent::BuildStarted { total_steps } => {
                self.total = *total_steps;
                None
            }
            ProgressEvent::StepStarted {
                step,
                index,
                total,
                stage,
                instruction,
                line,
                reason,
            } => {
                let pos = self.steps.len();
                self.steps.push(StepInfo {
                    index: *index,
                    total: *total,
                    stage: stage.clone(),
                    instruction: instruction.clone(),
                    line: *line,
                    started: now,
                    status: StepStatus::Running,
                    logs: VecDeque::new(),
                    dropped_logs: 0,
                    reason: reason.clone(),
                });
                self.by_id.insert(*step, pos);
                self.total = self.total.max(*total);
                Some(pos)
            }
            ProgressEvent::StepLog { step, line, .. } => {
                let pos = *self.by_id.get(step)?;
                let s = &mut self.steps[pos];
                if s.logs.len() >= MAX_KEPT_LINES {
                    s.logs.pop_front();
                    s.dropped_logs += 1;
                }
                let at = now.saturating_sub(s.started);
                s.logs.push_back((at, line.clone()));
                Some(pos)
            }
            ProgressEvent::StepCached { step } => {
                let pos = *self.by_id.get(step)?;
                self.steps[pos].status = StepStatus::Cached;
                Some(pos)
            }
            ProgressEvent::StepDone { step, elapsed } => {
                let pos = *self.by_id.get(step)?;
                self.steps[pos].status = StepStatus::Done(*elapsed);
                Some(pos)
            }
            ProgressEvent::StepFailed { step, error } => {
                let pos = *self.by_id.get(step)?;
                self.steps[pos].status = StepStatus::Failed(error.clone());
                self.failed.get_or_insert(pos);
                Some(pos)
            }
            ProgressEvent::Warning { message } => {
                self.warnings.push(message.clone());
                None
            }
            ProgressEvent::ImageWritten {
                config_digest,
                names,
                ..
            } => {
                self.image = Some((config_digest.clone(), names.clone()));
                None
            }
            ProgressEvent::BuildFinished { success, elapsed } => {
                self.finished = Some((*success, *elapsed));
                None
            }
            _ => None,
        }
    }

    /// (finished steps, cached steps)
    pub(crate) fn counts(&self) -> (usize, usize) {
        let done = self
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Running)
            .count();
        let cached = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Cached)
            .count();
        (done, cached)
    }
}

/// A writer that tolerates a closed stderr: progress must never fail the build.
pub(crate) struct Sink(pub(crate) Box<dyn Write + Send>);

impl Sink {
    pub(crate) fn emit(&mut self, text: &str) {
        let _ = self.0.write_all(text.as_bytes());
        let _ = self.0.flush();
    }
}

impl<T: Renderer + ?Sized> Renderer for Box<T> {
    fn as_progress(&self) -> &dyn Progress {
        (**self).as_progress()
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        (**self).finish(error);
    }
}

/// Locks a mutex even when a panicking thread poisoned it: a renderer keeps going.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shared helpers for unit tests of the renderers.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use kiln::{LogStream, ProgressEvent, StepId};

    /// A clock the test moves by hand.
    #[derive(Default)]
    pub(crate) struct ManualClock(AtomicU64);

    impl ManualClock {
        pub(crate) fn set_ms(&self, ms: u64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }

    impl super::Clock for ManualClock {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(crate) const DOCKERFILE: &str =
        "FROM scratch\nCOPY hello.txt /\nRUN echo hi && \\\n    false\nCMD [\"/hello\"]\n";

    pub(crate) fn started(
        id: usize,
        index: usize,
        instruction: &str,
        line: usize,
    ) -> ProgressEvent {
        ProgressEvent::StepStarted {
            step: StepId(id),
            index,
            total: 3,
            stage: "0".into(),
            instruction: instruction.into(),
            line,
            reason: None,
        }
    }

    pub(crate) fn log(id: usize, line: &str) -> ProgressEvent {
        ProgressEvent::StepLog {
            step: StepId(id),
            stream: LogStream::Stdout,
            line: line.into(),
        }
    }

    pub(crate) fn done(id: usize, ms: u64) -> ProgressEvent {
        ProgressEvent::StepDone {
            step: StepId(id),
            elapsed: Duration::from_millis(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn familiar_names() {
        assert_eq!(
            super::familiar("docker.io/library/hello:latest"),
            "hello:latest"
        );
        assert_eq!(super::familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(
            super::familiar("127.0.0.1:5000/app:1"),
            "127.0.0.1:5000/app:1"
        );
    }
}
