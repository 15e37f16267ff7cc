//! The typed instructions ([`Instruction`] and its parts); [`crate::typed`] makes them from
//! AST nodes.
//!
//! Words are kept RAW (unexpanded): the solver expands them with the ARG/ENV in scope using
//! [`crate::shell::Lexer`]. Each field says whether BuildKit expands it and how:
//! "word" = `process_word` in default mode, "words" = `process_words` in default mode.

use crate::ast::Heredoc;

/// The 18 Dockerfile instructions, in upper case (for suggestions and messages).
pub const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command in shell form (run through the SHELL) or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Command {
    /// Shell form: the rest of the line, continuations joined. BuildKit does not expand it
    /// (the shell does); for display it uses `raw_quotes + skip_unset_env`.
    Shell(String),
    /// Exec form: the JSON array elements. Not expanded by BuildKit.
    Exec(Vec<String>),
}

impl Command {
    /// Whether this is the shell form.
    pub fn is_shell(&self) -> bool {
        matches!(self, Command::Shell(_))
    }
}

/// A `key=value` pair of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyValue {
    /// The key, raw. BuildKit expands it as a word (default mode).
    pub key: String,
    /// The value, raw (quotes and escapes kept). BuildKit expands it as a word (default mode).
    pub value: String,
    /// `true` for `k=v`, `false` for the legacy `KEY value` form.
    pub equals: bool,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    /// The name, raw. BuildKit expands `name=value` words as a whole (default mode) before
    /// splitting when the ARG is inside a stage; meta ARGs are expanded with earlier meta ARGs.
    pub name: String,
    /// The default value, raw (`None` for a bare `ARG name`).
    pub default: Option<String>,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct From {
    /// The base image reference, raw. BuildKit expands it as a word with the meta ARGs.
    pub image: String,
    /// `--platform`, raw (expanded as a word with the meta ARGs and BUILDPLATFORM etc.).
    pub platform: Option<String>,
    /// The stage name, lowercased and validated (`^[a-z][a-z0-9-_.]*$`). Not expanded.
    pub name: Option<String>,
}

/// `RUN [--mount=...]... [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    /// The command. Shell form may reference heredocs (`RUN <<EOF`).
    pub command: Command,
    /// Raw `--mount` values in order. BuildKit expands each as a word (default mode), then
    /// parses the CSV: see [`crate::RunMount::parse`].
    pub mounts: Vec<String>,
    /// Raw `--network` value (`default`, `none`, `host`); not expanded.
    pub network: Option<String>,
    /// Raw `--security` value (`sandbox`, `insecure`); not expanded.
    pub security: Option<String>,
    /// Heredocs attached to the command line.
    pub heredocs: Vec<Heredoc>,
}

/// A source of COPY/ADD given inline as a heredoc (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceContent {
    /// The heredoc name, used as the file name.
    pub path: String,
    /// The content, with tabs already chomped for `<<-`.
    pub data: String,
    /// Whether BuildKit expands the content (mode `skip_process_quotes`).
    pub expand: bool,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Copy {
    /// Source paths, raw. BuildKit expands each as a word (default mode).
    pub sources: Vec<String>,
    /// Inline (heredoc) sources.
    pub source_contents: Vec<SourceContent>,
    /// Destination, raw; expanded as a word (default mode).
    pub dest: String,
    /// `--from` (stage name, index or image), raw; expanded as a word.
    pub from: Option<String>,
    /// `--chown`, raw; expanded as a word.
    pub chown: Option<String>,
    /// `--chmod`, raw; expanded as a word.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns (repeatable), raw; each expanded as a word.
    pub exclude: Vec<String>,
    /// Whether the arguments were in JSON form.
    pub json: bool,
    /// All heredocs attached to the line.
    pub heredocs: Vec<Heredoc>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Add {
    /// Source paths or URLs, raw; each expanded as a word (default mode).
    pub sources: Vec<String>,
    /// Inline (heredoc) sources.
    pub source_contents: Vec<SourceContent>,
    /// Destination, raw; expanded as a word.
    pub dest: String,
    /// `--chown`, raw; expanded as a word.
    pub chown: Option<String>,
    /// `--chmod`, raw; expanded as a word.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`, raw; expanded as a word.
    pub checksum: Option<String>,
    /// `--unpack` (`None` when not given: BuildKit's default unpacks local archives only).
    pub unpack: Option<bool>,
    /// `--exclude` patterns (repeatable), raw; each expanded as a word.
    pub exclude: Vec<String>,
    /// Whether the arguments were in JSON form.
    pub json: bool,
    /// All heredocs attached to the line.
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// A check command with its options (raw durations, validated like BuildKit).
    Check {
        /// The command (shell form becomes `CMD-SHELL` in the image config).
        command: Command,
        /// `--interval` (Go duration syntax, e.g. `30s`); not expanded.
        interval: Option<String>,
        /// `--timeout`.
        timeout: Option<String>,
        /// `--start-period`.
        start_period: Option<String>,
        /// `--start-interval`.
        start_interval: Option<String>,
        /// `--retries`.
        retries: Option<i64>,
    },
}

/// `ONBUILD instruction`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Onbuild {
    /// The trigger text as stored in the image config (`RUN echo hi`; heredoc bodies are
    /// appended after a newline, as BuildKit does). Re-parse it with
    /// [`crate::parse_instruction`].
    pub expression: String,
    /// The parsed trigger.
    pub instruction: Box<Instruction>,
}

/// A typed Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Instruction {
    /// `FROM` (also available as [`crate::Stage`] fields).
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`; not expanded.
    Cmd(Command),
    /// `ENTRYPOINT`; not expanded.
    Entrypoint(Command),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `ENV` pairs (keys and values expanded as words, in order, each seeing the previous).
    Env(Vec<KeyValue>),
    /// `LABEL` pairs (keys and values expanded as words).
    Label(Vec<KeyValue>),
    /// `ARG` declarations.
    Arg(Vec<ArgDecl>),
    /// `WORKDIR path`, raw; expanded as a word.
    Workdir(String),
    /// `USER user[:group]`, raw; expanded as a word.
    User(String),
    /// `VOLUME` paths, raw; each expanded as a word.
    Volume(Vec<String>),
    /// `EXPOSE` ports, raw and sorted like BuildKit; each expanded as words.
    Expose(Vec<String>),
    /// `STOPSIGNAL`, raw; expanded as a word.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL` (JSON form only); not expanded.
    Shell(Vec<String>),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `MAINTAINER`, raw; not expanded.
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}
