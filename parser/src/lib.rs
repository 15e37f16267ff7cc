//! Dockerfile syntax for kiln: directives, instructions, heredocs and the shell-word lexer,
//! reproducing BuildKit's `frontend/dockerfile/parser` (and `shell`) exactly. Knows nothing of
//! files or images: it reads bytes and returns typed data.
//!
//! Built on nom: the line reader (`lines`: continuations, comments, directives, heredoc
//! bodies), the line splitter (`words`: keyword, flags, words, `name=value` lists), JSON
//! arrays (`json`) and heredoc markers are nom parsers; every node and error carries a
//! [`Span`] (line, column, end line and column) set where it is made.
//!
//! Three layers:
//! - [`ast`]: BuildKit's low-level AST ([`ast::parse_ast`], [`ast::Ast::dump`] is
//!   `Node.Dump()` byte for byte);
//! - [`Instruction`]: the typed layer, grouped into [`Stage`]s by [`parse`];
//! - [`shell::Lexer`]: `$VAR` / `${VAR...}` expansion the solver applies to the raw words.
//!
//! ```
//! use kiln_parser::{Command, Instruction, parse, shell::Lexer};
//!
//! let df = parse(b"ARG TAG=3.20\nFROM alpine:$TAG AS base\nRUN make install\n")?;
//! assert_eq!(df.global.len(), 1);
//! let stage = &df.stages[0];
//! assert_eq!(stage.name.as_deref(), Some("base"));
//! assert_eq!(stage.base, "alpine:$TAG"); // raw: the solver expands it
//! let step = &stage.instructions[0];
//! assert_eq!((step.start_line, step.original.as_str()), (3, "RUN make install"));
//! assert!(matches!(&step.instruction,
//!     Instruction::Run(r) if r.command == Command::Shell("make install".into())));
//!
//! let image = Lexer::new(df.escape).process_word(&stage.base, &[("TAG", "3.20")])?;
//! assert_eq!(image, "alpine:3.20");
//!
//! let err = parse(b"FROM a\nRUNN x\n").unwrap_err();
//! assert_eq!(err.to_string(), "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)");
//! # Ok::<(), kiln_parser::Error>(())
//! ```

pub mod ast;
mod duration;
mod error;
mod flags;
mod heredoc;
mod instruction;
mod json;
mod lines;
mod mount;
mod path;
mod pattern;
mod quote;
pub mod shell;
mod suggest;
mod typed;
mod words;
/// BuildKit's "did you mean X?" search (`util/suggest.Search`): the closest option by
/// Levenshtein distance below 3, `None` when `val` is itself an option.
pub use suggest::suggest;

pub use path::clean_path;
pub use quote::go_quote;

pub use ast::{Directive, Heredoc, Warning};
pub use error::{Error, Result, Span};
pub use instruction::{
    Add, ArgDecl, Command, Copy, From, Healthcheck, INSTRUCTION_NAMES, Instruction, KeyValue,
    Onbuild, Run, SourceContent,
};
pub use mount::{CacheSharing, MountType, RunMount};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dockerfile {
    /// Parser directives (`syntax`, `escape`, `check`) from the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``); pass it to [`shell::Lexer::new`].
    pub escape: char,
    /// Non-fatal warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
    /// Instructions before the first FROM (only ARG is allowed there: the meta ARGs).
    pub global: Vec<Located>,
    /// The build stages in file order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The value of a parser directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// The stage named `name` (case-insensitive) or with that index.
    pub fn stage(&self, name_or_index: &str) -> Option<&Stage> {
        let lower = name_or_index.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name_or_index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.stages.get(i))
            })
    }
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// Position in the file (0-based), usable as `COPY --from=<index>`.
    pub index: usize,
    /// The base image word, raw (BuildKit expands it with the meta ARGs, default mode).
    pub base: String,
    /// `--platform`, raw (expanded with the meta ARGs and the platform ARGs).
    pub platform: Option<String>,
    /// `AS name`, lowercased and validated.
    pub name: Option<String>,
    /// First line of the FROM (1-based).
    pub start_line: usize,
    /// Last line of the FROM.
    pub end_line: usize,
    /// The FROM line as written (continuations joined), e.g. `FROM alpine AS base`.
    pub original: String,
    /// From the FROM keyword to the end of its line.
    pub span: Span,
    /// The stage's instructions.
    pub instructions: Vec<Located>,
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Located {
    /// The typed instruction.
    pub instruction: Instruction,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based, heredoc terminators included).
    pub end_line: usize,
    /// The instruction line as written, continuations joined (e.g. `RUN make install`), for
    /// progress display. Heredoc bodies are not included.
    pub original: String,
    /// From the keyword to the end of the instruction line (heredoc bodies excluded).
    pub span: Span,
}

impl Located {
    /// The line range, `start..=end`.
    pub fn lines(&self) -> std::ops::RangeInclusive<usize> {
        self.start_line..=self.end_line
    }
}

/// Parses a Dockerfile: BOM, CRLF, directives, escape, continuations, heredocs, then the typed
/// layer and stages. Errors read `Dockerfile:LINE: message` (see [`Error::with_file`]) and
/// carry the [`Span`] of the offending token ([`Error::span`]).
pub fn parse(source: &[u8]) -> Result<Dockerfile> {
    let mut global = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    // Nodes are converted as the syntax layer produces them; the first typed error is kept
    // and reported only if the whole file is syntactically valid, as BuildKit (which parses
    // the AST completely first) would.
    let mut first_error: Option<Error> = None;
    let meta = lines::parse_nodes(source, |mut node, segments| {
        if first_error.is_some() {
            return;
        }
        if let Err(e) = add_node(&mut node, segments, &mut global, &mut stages) {
            first_error = Some(e);
        }
    })?;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Dockerfile {
        directives: meta.directives,
        escape: meta.escape,
        warnings: meta.warnings,
        global,
        stages,
    })
}

fn add_node(
    node: &mut ast::Node,
    segments: &lines::Segments,
    global: &mut Vec<Located>,
    stages: &mut Vec<Stage>,
) -> Result<()> {
    let (start_line, end_line, span) = (node.start_line, node.end_line, node.span);
    let instruction =
        typed::from_node(node).map_err(|f| f.at(start_line, end_line, segments, &node.original))?;
    let original = trimmed(std::mem::take(&mut node.original));
    if let Instruction::From(from) = instruction {
        // Stages tend to be alike: size the instruction vector like the previous one's, so
        // it is not regrown (and its large elements copied) a few times per stage.
        let hint = stages.last().map_or(0, |s| s.instructions.len());
        stages.push(Stage {
            index: stages.len(),
            base: from.image,
            platform: from.platform,
            name: from.name,
            start_line,
            end_line,
            original,
            span,
            instructions: Vec::with_capacity(hint),
        });
        return Ok(());
    }
    let located = Located {
        instruction,
        start_line,
        end_line,
        original,
        span,
    };
    match stages.last_mut() {
        Some(stage) => stage.instructions.push(located),
        None if matches!(located.instruction, Instruction::Arg(_)) => global.push(located),
        None => {
            return Err(Error::at(
                start_line,
                end_line,
                Some(span),
                "no build stage in current context",
            ));
        }
    }
    Ok(())
}

fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_owned()
    }
}

/// Parses a single instruction line, such as an ONBUILD trigger read back from an image
/// config (`RUN echo hi`, possibly followed by heredoc bodies on the next lines). Line numbers
/// in the result and errors count from 1 within `text`.
pub fn parse_instruction(text: &str, escape: char) -> Result<Located> {
    let mut src = String::new();
    if escape == '`' {
        src.push_str("# escape=`\n");
    }
    let offset = usize::from(escape == '`');
    src.push_str(text);
    let mut first: Option<Result<Located>> = None;
    lines::parse_nodes(src.as_bytes(), |mut node, segments| {
        if first.is_some() {
            return;
        }
        let (start_line, end_line) = (node.start_line - offset, node.end_line - offset);
        let span = node.span.shifted_up(offset);
        let located = typed::from_node(&mut node)
            .map_err(|f| {
                shift(
                    f.at(node.start_line, node.end_line, segments, &node.original),
                    offset,
                )
            })
            .map(|instruction| Located {
                instruction,
                start_line,
                end_line,
                original: node.original.trim().to_owned(),
                span,
            });
        first = Some(located);
    })
    .map_err(|e| shift(e, offset))?;
    first.unwrap_or_else(|| Err(Error::syntax(1, 1, "file with no instructions")))
}

fn shift(e: Error, offset: usize) -> Error {
    match e {
        Error::Syntax {
            file,
            line,
            end_line,
            message,
            span,
        } => Error::Syntax {
            file,
            line: line.saturating_sub(offset).max(1),
            end_line: end_line.saturating_sub(offset).max(1),
            message,
            span: span.map(|s| s.shifted_up(offset)),
        },
        other => other,
    }
}

/// BuildKit's `Node.Dump()` of a whole Dockerfile (the format of the parser's golden
/// `result` files), or BuildKit's error.
pub fn dump_buildkit(source: &[u8]) -> Result<String> {
    Ok(ast::parse_ast(source)?.dump())
}

/// Where a `--mount` error (from [`RunMount::parse`], which the solver calls after expanding
/// the value) is on `line`, the RUN instruction's first line as written: the span of the
/// offending field when the value needs no expansion, else of the `--mount` flag. `message`
/// is the error's [`Error::message`]: it picks the `--mount` flag that raised it.
///
/// ```
/// let line = "RUN --mount=type=cache,colour=red make";
/// let message = "unexpected key 'colour' in 'colour=red'";
/// let span = kiln_parser::mount_error_span(line, message).expect("found");
/// assert_eq!((span.column, span.end_column), (24, 34));
/// assert_eq!(kiln_parser::mount_error_span(line, "exit code: 1"), None);
/// ```
pub fn mount_error_span(line: &str, message: &str) -> Option<Span> {
    let mut segments = lines::Segments::default();
    segments.push(0, 1, 1);
    let node = ast::node_from_line(line.to_owned(), '\\').ok()?;
    node.flags.iter().enumerate().find_map(|(index, word)| {
        let range = ast::flag_range(line, node.parts.keyword.start, index)?;
        let value = word.strip_prefix("--mount=")?;
        let e = RunMount::parse(value).err()?;
        if e.message() != message {
            return None;
        }
        let written = line.get(range.clone())?;
        let field = e.mount_field().filter(|_| written == word.as_str());
        Some(match field {
            Some(f) => {
                let start = range.start + "--mount=".len();
                segments.span(line, start + f.start..start + f.end)
            }
            None => segments.span(line, range.clone()),
        })
    })
}
