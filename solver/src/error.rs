//! The solver's one error type: every variant names the path, line, step or digest involved.

use std::path::PathBuf;

/// Everything that can go wrong while planning or running a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on a path.
    #[error("{op} `{path}`: {source}")]
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
    /// The Dockerfile could not be parsed.
    #[error("{0}")]
    Parse(String),
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
    #[error("snapshot {what}: {message}")]
    Snapshot {
        /// Which snapshot or operation.
        what: String,
        /// The underlying error text.
        message: String,
    },
    /// The image layer (pull, store, export) failed.
    #[error("image {what}: {message}")]
    Image {
        /// Which image, digest or output.
        what: String,
        /// The underlying error text.
        message: String,
    },
    /// The executor failed to run a process (not a non-zero exit).
    #[error("Dockerfile:{line}: run `{command}`: {message}")]
    Exec {
        /// 1-based Dockerfile line.
        line: usize,
        /// The command.
        command: String,
        /// The underlying error text.
        message: String,
    },
    /// A cache record is corrupt or unreadable.
    #[error("cache record `{path}`: {message}")]
    Cache {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A request option is invalid (output spec, secret spec, ...).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// What is wrong.
        message: String,
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
