//! The crate's one error type. Every parse error names the line it happened on; lexer errors
//! (which know no line) are turned into located errors by [`Error::at_line`].

/// A Dockerfile that BuildKit would reject, or a word its lexer cannot expand.
///
/// `Display` of a located error starts with `Dockerfile:LINE: ` (the file name can be changed
/// with [`Error::with_file`]); the message after it is BuildKit's own wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
        /// Column (1-based, in characters) on line `line` of the offending token, when known:
        /// the unknown instruction word, the bad flag, the start of the JSON array, the
        /// unterminated heredoc marker, the bad `--mount` field. Not part of `Display`.
        column: Option<usize>,
    },
    /// A shell-word expansion error without a location, e.g.
    /// `failed to process "${x": unsupported modifier (�) in substitution`.
    #[error("{message}")]
    Expand {
        /// BuildKit's message.
        message: String,
    },
}

impl Error {
    pub(crate) fn syntax(line: usize, end_line: usize, message: impl Into<String>) -> Self {
        Error::Syntax {
            file: "Dockerfile".to_owned(),
            line,
            end_line: end_line.max(line),
            message: message.into(),
            column: None,
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
                column,
                ..
            } => Error::Syntax {
                file: name.to_owned(),
                line,
                end_line,
                message,
                column,
            },
            other @ Error::Expand { .. } => other,
        }
    }

    /// Locates an error at a line range; an error that already has a location keeps it.
    #[must_use]
    pub fn at_line(self, line: usize, end_line: usize) -> Self {
        match self {
            Error::Expand { message } => Error::syntax(line, end_line, message),
            other @ Error::Syntax { .. } => other,
        }
    }

    /// The message without the `FILE:LINE: ` prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::Syntax { message, .. } | Error::Expand { message } => message,
        }
    }

    /// The first line (1-based) the error points at, if it is located.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Syntax { line, .. } => Some(*line),
            Error::Expand { .. } => None,
        }
    }

    /// The column (1-based, in characters) on [`Error::line`] of the offending token, when
    /// it is known, e.g. 3 for `  RUNN x` (`unknown instruction: RUNN`).
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Syntax { column, .. } => *column,
            Error::Expand { .. } => None,
        }
    }

    /// Fills in the column of a located error from `source`, the text it was parsed from
    /// (lines counted the way the parser counts them).
    pub(crate) fn with_column_from(mut self, source: &str) -> Self {
        if let Error::Syntax {
            line,
            message,
            column,
            ..
        } = &mut self
            && column.is_none()
            && let Some(text) = line.checked_sub(1).and_then(|i| source.split('\n').nth(i))
        {
            let text = text.strip_suffix('\r').unwrap_or(text);
            let text = if *line == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            *column = crate::column::error_column(text, message);
        }
        self
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
