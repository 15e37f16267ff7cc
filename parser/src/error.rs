//! The crate's one error type and the [`Span`] it carries. Every parse error names the
//! instruction's lines (BuildKit's `Dockerfile:LINE:`) and the span of the offending token,
//! set where the error is raised; lexer errors (which know no line) are turned into located
//! errors by [`Error::at_line`].

/// A range of the Dockerfile: 1-based lines and 1-based columns counted in characters, the end
/// exclusive (`end_column` is the column just after the last character).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Span {
    /// First line (1-based).
    pub line: usize,
    /// Column of the first character on `line` (1-based, in characters).
    pub column: usize,
    /// Last line (1-based, >= `line`).
    pub end_line: usize,
    /// Column just after the last character on `end_line` (1-based, in characters).
    pub end_column: usize,
}

impl Span {
    /// A span from `(line, column)` to `(end_line, end_column)`.
    pub fn new(line: usize, column: usize, end_line: usize, end_column: usize) -> Self {
        Span {
            line,
            column,
            end_line,
            end_column,
        }
    }

    /// The span moved `lines` lines up (for text parsed after a prefix of `lines` lines).
    #[must_use]
    pub(crate) fn shifted_up(self, lines: usize) -> Self {
        Span {
            line: self.line.saturating_sub(lines).max(1),
            end_line: self.end_line.saturating_sub(lines).max(1),
            ..self
        }
    }
}

/// A Dockerfile that BuildKit would reject, or a word its lexer cannot expand.
///
/// `Display` of a located error starts with `Dockerfile:LINE: ` (the file name can be changed
/// with [`Error::with_file`]); the message after it is BuildKit's own wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error located at a line range of the Dockerfile (1-based, inclusive).
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file name shown in the message (`Dockerfile` unless set by the caller).
        file: String,
        /// First line of the offending instruction (1-based).
        line: usize,
        /// Last line of the offending instruction (1-based, >= `line`).
        end_line: usize,
        /// BuildKit's message, e.g. `unknown instruction: RUNN (did you mean RUN?)`.
        message: String,
        /// Where the offending token is, set where the error is raised: the unknown
        /// instruction word, the bad flag, the arguments (a JSON array, a bad stage name),
        /// the unterminated heredoc marker, the bad directive. Not part of `Display`.
        span: Option<Span>,
    },
    /// A shell-word expansion error without a location, e.g.
    /// `failed to process "${x": unsupported modifier (�) in substitution`.
    #[error("{message}")]
    Expand {
        /// BuildKit's message.
        message: String,
    },
    /// A bad `--mount` value ([`crate::RunMount::parse`]): BuildKit checks it after
    /// expansion, so it has no line; `field` is the offending CSV field's byte range in the
    /// parsed value, when one field is to blame.
    #[error("{message}")]
    Mount {
        /// BuildKit's message, e.g. `unexpected key 'colour' in 'colour=red'`.
        message: String,
        /// Byte range of the offending field in the `--mount` value.
        field: Option<std::ops::Range<usize>>,
    },
}

impl Error {
    pub(crate) fn syntax(line: usize, end_line: usize, message: impl Into<String>) -> Self {
        Error::Syntax {
            file: "Dockerfile".to_owned(),
            line,
            end_line: end_line.max(line),
            message: message.into(),
            span: None,
        }
    }

    /// A located error whose offending token is at `span`.
    pub(crate) fn at(
        line: usize,
        end_line: usize,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        Error::Syntax {
            file: "Dockerfile".to_owned(),
            line,
            end_line: end_line.max(line),
            message: message.into(),
            span,
        }
    }

    pub(crate) fn expand(message: impl Into<String>) -> Self {
        Error::Expand {
            message: message.into(),
        }
    }

    /// Sets the file name shown before the line number (`Dockerfile.dev:3: ...`).
    #[must_use]
    pub fn with_file(self, name: &str) -> Self {
        match self {
            Error::Syntax {
                line,
                end_line,
                message,
                span,
                ..
            } => Error::Syntax {
                file: name.to_owned(),
                line,
                end_line,
                message,
                span,
            },
            other => other,
        }
    }

    /// Locates an error at a line range; an error that already has a location keeps it.
    #[must_use]
    pub fn at_line(self, line: usize, end_line: usize) -> Self {
        match self {
            Error::Expand { message } | Error::Mount { message, .. } => {
                Error::syntax(line, end_line, message)
            }
            other @ Error::Syntax { .. } => other,
        }
    }

    /// The message without the `FILE:LINE: ` prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::Syntax { message, .. }
            | Error::Expand { message }
            | Error::Mount { message, .. } => message,
        }
    }

    /// The first line (1-based) the error points at, if it is located.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Syntax { line, .. } => Some(*line),
            Error::Expand { .. } | Error::Mount { .. } => None,
        }
    }

    /// The span of the offending token, when the error is located.
    pub fn span(&self) -> Option<Span> {
        match self {
            Error::Syntax { span, .. } => *span,
            Error::Expand { .. } | Error::Mount { .. } => None,
        }
    }

    /// The column (1-based, in characters) on [`Error::line`] of the offending token, when
    /// the token starts on that line, e.g. 3 for `  RUNN x` (`unknown instruction: RUNN`).
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Syntax { line, span, .. } => span.filter(|s| s.line == *line).map(|s| s.column),
            Error::Expand { .. } | Error::Mount { .. } => None,
        }
    }

    /// The byte range of the offending field in a `--mount` value ([`Error::Mount`]).
    pub fn mount_field(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Error::Mount { field, .. } => field.clone(),
            _ => None,
        }
    }
}

/// A message of the syntax or typed layer with where it was raised: a byte range of the
/// joined instruction line. [`Fault::at`] turns it into an [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// BuildKit's message.
    pub(crate) message: String,
    /// The offending token's bytes in the joined line.
    pub(crate) at: Option<std::ops::Range<usize>>,
}

impl Fault {
    /// The error located at the instruction's lines, its span found through `segments`, the
    /// map of the joined line `joined`.
    pub(crate) fn at(
        self,
        line: usize,
        end_line: usize,
        segments: &crate::lines::Segments,
        joined: &str,
    ) -> Error {
        let span = self.at.map(|r| segments.span(joined, r));
        Error::at(line, end_line, span, self.message)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
