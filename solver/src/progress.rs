//! Build progress events: what the solver reports while it runs, and the sink that receives them.
//!
//! The CLI renders these (tty, plain, json, quiet); embedders implement [`Progress`] to receive
//! the same stream. Events for one step arrive in order: `StepStarted`, then any number of
//! `StepLog`, then exactly one of `StepCached`, `StepDone` or `StepFailed`. Steps run in
//! parallel, so events of different steps interleave.

use std::time::Duration;

/// Identifies one step of a build (stable for the duration of the build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(pub usize);

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// One thing that happened during a build. New kinds of events will be added: match with a
/// `_ => {}` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The plan is known; `total_steps` steps will be reported.
    BuildStarted {
        /// Number of steps in the plan (cached ones included).
        total_steps: usize,
    },
    /// A step began (or was looked up in the cache).
    StepStarted {
        /// The step.
        step: StepId,
        /// 1-based position in Dockerfile order, for `Step N/M` lines.
        index: usize,
        /// Total number of steps, for `Step N/M` lines.
        total: usize,
        /// The stage the step belongs to (its name, or its index as a string).
        stage: String,
        /// The instruction as written, e.g. `RUN make install`.
        instruction: String,
        /// Dockerfile line of the instruction (1-based).
        line: usize,
        /// For a step that will run (missed the cache): why, compared with the last build of
        /// the same Dockerfile step in this state directory (a changed file's path and both
        /// digests, a changed build arg or env, a parent step that missed, or no earlier
        /// build). `None` for a step looked up in the cache and found, and for base images.
        reason: Option<String>,
    },
    /// One line of a running step's output (without the trailing newline).
    StepLog {
        /// The step.
        step: StepId,
        /// Which stream.
        stream: LogStream,
        /// The line, lossily decoded as UTF-8.
        line: String,
    },
    /// The step's result was found in the cache and reused.
    StepCached {
        /// The step.
        step: StepId,
    },
    /// The step ran and succeeded.
    StepDone {
        /// The step.
        step: StepId,
        /// How long it ran.
        elapsed: Duration,
    },
    /// The step failed; the build stops.
    StepFailed {
        /// The step.
        step: StepId,
        /// Human-readable error (names the Dockerfile line, command, exit code).
        error: String,
    },
    /// Where the build runs, sent once right after `BuildStarted`, so a slow or narrowed build
    /// is never silent (a fallback also comes with a `Warning`).
    Environment {
        /// The snapshot driver: `overlayfs`, or `native` (a full copy per step).
        snapshot_driver: &'static str,
        /// Whether the build runs in a user namespace: an ordinary user's rootless build, or a
        /// process started in one (a rootless container).
        rootless: bool,
    },
    /// A non-fatal warning (e.g. an unused `--build-arg`).
    Warning {
        /// The message.
        message: String,
    },
    /// The final image was written.
    ImageWritten {
        /// Manifest digest, `sha256:...`.
        manifest_digest: String,
        /// Config digest (the image id), `sha256:...`.
        config_digest: String,
        /// Names it was tagged or exported as.
        names: Vec<String>,
    },
    /// The build ended.
    BuildFinished {
        /// Whether it succeeded.
        success: bool,
        /// Total wall time.
        elapsed: Duration,
    },
}

/// A sink for progress events. Called from several threads at once.
pub trait Progress: Send + Sync {
    /// Receives one event.
    fn event(&self, event: &ProgressEvent);
}

/// A sink that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}
