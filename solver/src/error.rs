//! The solver's one error type: every variant names the path, line, step or digest involved,
//! and keeps the lower crate's error as its [`source`](std::error::Error::source) (never as a
//! string). A message never repeats its source's text: [`Error::report`] (and anyhow's `{:#}`)
//! prints the chain, each cause once.

use std::path::PathBuf;

/// Everything that can go wrong while planning or running a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed on a path.
    #[error("{op} `{path}`")]
    Io {
        /// What was being done (`read`, `copy`, `mkdir`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path inside a snapshot or the context could not be resolved or created inside its
    /// root (too many symlinks, a file where a directory must be, ...).
    #[error(transparent)]
    Contained(#[from] kiln_fs::Error),
    /// A rootless build could not enter its user namespace (threads already running, user
    /// namespaces disabled).
    #[error(transparent)]
    Rootless(#[from] kiln_userns::Error),
    /// A `.dockerignore` pattern is malformed.
    #[error("invalid .dockerignore pattern `{pattern}`: {reason}")]
    IgnorePattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The Dockerfile could not be read.
    #[error("cannot read Dockerfile `{path}`")]
    ReadDockerfile {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Dockerfile could not be parsed (the parser's error names the file and line).
    #[error(transparent)]
    Parse(#[from] kiln_parser::Error),
    /// `RUN` steps of a platform this machine cannot run (no binfmt_misc emulator for it),
    /// found before the build starts.
    #[error("Dockerfile:{line}: cannot run `RUN` steps for {platform} on this machine")]
    NoEmulator {
        /// The first `RUN` of that platform (1-based).
        line: usize,
        /// The platform (`linux/arm64`).
        platform: String,
        /// What is missing and what to install.
        source: kiln_executor::Error,
    },
    /// The Dockerfile parsed but describes an invalid build.
    #[error("Dockerfile:{line}: {message}")]
    Plan {
        /// 1-based Dockerfile line (0 when not tied to a line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A COPY/ADD source does not exist.
    #[error(
        "Dockerfile:{line}: failed to compute cache key: failed to calculate checksum of ref: \"/{}\": not found",
        .path.trim_start_matches('/')
    )]
    SourceNotFound {
        /// 1-based Dockerfile line.
        line: usize,
        /// The source path as given.
        path: String,
    },
    /// A step failed while running.
    #[error("Dockerfile:{line}: `{instruction}` did not complete successfully: {message}")]
    StepFailed {
        /// 1-based Dockerfile line.
        line: usize,
        /// The instruction as written.
        instruction: String,
        /// Exit code and last lines of output, or the error.
        message: String,
    },
    /// A build step process exited with a non-zero code.
    #[error(
        "Dockerfile:{line}: process \"{command}\" did not complete successfully: exit code: {exit_code}{}",
        tail_text(.tail)
    )]
    ProcessFailed {
        /// 1-based Dockerfile line.
        line: usize,
        /// The command as run.
        command: String,
        /// Its exit code.
        exit_code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The snapshotter failed.
    #[error("snapshot {what}")]
    Snapshot {
        /// Which snapshot or operation.
        what: String,
        /// The snapshotter's error.
        source: kiln_snapshotter::Error,
    },
    /// The image crate (pull, store, export) failed.
    #[error("image {what}")]
    ImageStore {
        /// Which image, digest or output.
        what: String,
        /// The image crate's error.
        source: kiln_image::Error,
    },
    /// Pushing the built image failed.
    #[error("cannot push `{name}`")]
    Push {
        /// The name pushed to.
        name: String,
        /// The image crate's error.
        source: kiln_image::Error,
    },
    /// An image is not what the build expects (a layer count or diff_id mismatch...).
    #[error("image {what}: {message}")]
    Image {
        /// Which image, digest or output.
        what: String,
        /// The underlying error text.
        message: String,
    },
    /// The executor could not be set up for `RUN` steps (its init binary, the state dir);
    /// shared by every step that asks, hence the `Arc`.
    #[error("cannot set up the executor for `RUN` steps")]
    ExecutorSetup {
        /// The executor's error.
        source: std::sync::Arc<kiln_executor::Error>,
    },
    /// A cache record is corrupt or unreadable.
    #[error("cache record `{path}`: {message}")]
    Cache {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A cache record (or the context's digest cache) could not be encoded.
    #[error("cannot encode `{path}`")]
    CacheEncode {
        /// The file it was for.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A request option is invalid (output spec, secret spec, ...).
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The flag or field concerned, e.g. `--output`.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The executor could not run a process (not a non-zero exit).
    #[error("Dockerfile:{line}: run `{command}`")]
    Executor {
        /// 1-based Dockerfile line (0 when not a Dockerfile step).
        line: usize,
        /// The command.
        command: String,
        /// The executor's error.
        source: kiln_executor::Error,
    },
    /// The build was cancelled: through its [`crate::CancelHandle`] (SIGINT/SIGTERM in the
    /// CLI), or, for the steps still running, because another step failed.
    #[error("the build was canceled")]
    Cancelled,
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{}", tail.join("\n"))
    }
}

impl Error {
    /// The message and each of its causes once, joined with `: ` (what a user is shown).
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            // A transparent variant shows its source's text already.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = c.source();
        }
        out
    }

    /// Whether the build stopped because its [`crate::CancelHandle`] was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// The Dockerfile lines (1-based, first and last) the error points at, when known.
    pub fn dockerfile_lines(&self) -> Option<(usize, usize)> {
        match self {
            Error::Parse(kiln_parser::Error::Syntax { line, end_line, .. }) => {
                Some((*line, *end_line))
            }
            Error::Plan { line, .. }
            | Error::SourceNotFound { line, .. }
            | Error::StepFailed { line, .. }
            | Error::ProcessFailed { line, .. }
            | Error::Executor { line, .. }
            | Error::Executor { line, .. }
                if *line > 0 =>
            {
                Some((*line, *line))
            }
            _ => None,
        }
    }
}

/// The solver's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an `Io` error for `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
