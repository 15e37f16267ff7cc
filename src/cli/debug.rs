//! `kiln debug ...`: dump the parsed AST and expand words, to check the parser from outside.
//! Owns only argument handling and output formatting; all logic lives in `kiln-parser`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use kiln_parser::shell::Lexer;

/// Output formats of `kiln debug dump-ast`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AstFormat {
    /// BuildKit's `Node.Dump()` format, byte for byte.
    Buildkit,
    /// The full syntax tree as JSON: lines, flags, heredocs, directives, warnings.
    Json,
    /// The typed instructions grouped into stages, as JSON.
    Typed,
}

/// Debug subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum DebugCommand {
    /// Print the parsed Dockerfile AST.
    DumpAst {
        /// Output format.
        #[arg(long, value_enum, default_value = "buildkit")]
        format: AstFormat,
        /// The Dockerfile (`-` for standard input).
        file: std::path::PathBuf,
    },
    /// Expand a word with BuildKit's shell lexer and print the result as JSON.
    Expand {
        /// Split the result into words (prints a JSON array).
        #[arg(long)]
        words: bool,
        /// Escape character: `\` (default) or `` ` ``.
        #[arg(long, default_value = "\\", value_name = "C")]
        escape: String,
        /// A variable, `K=V` (repeatable). `K` alone sets it to the empty string.
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Keep quote characters (RUN display mode).
        #[arg(long)]
        raw_quotes: bool,
        /// Keep escape characters.
        #[arg(long)]
        raw_escapes: bool,
        /// Treat quotes as ordinary characters (heredoc body mode).
        #[arg(long)]
        skip_process_quotes: bool,
        /// Leave references to unset variables as written.
        #[arg(long)]
        skip_unset: bool,
        /// The word to expand (put it after `--`).
        #[arg(allow_hyphen_values = true)]
        word: String,
    },
}

pub(crate) fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpAst { format, file } => dump_ast(format, &file),
        DebugCommand::Expand {
            words,
            escape,
            env,
            raw_quotes,
            raw_escapes,
            skip_process_quotes,
            skip_unset,
            word,
        } => {
            let escape = match escape.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => anyhow::bail!("invalid escape character `{other}`: use `\\` or `` ` ``"),
            };
            let mut lex = Lexer::new(escape);
            lex.raw_quotes = raw_quotes;
            lex.raw_escapes = raw_escapes;
            lex.skip_process_quotes = skip_process_quotes;
            lex.skip_unset_env = skip_unset;
            let env: Vec<(String, String)> = env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect();
            let out = if words {
                lex.process_words(&word, &env)
                    .map(|w| serde_json::to_string(&w))
            } else {
                lex.process_word(&word, &env)
                    .map(|w| serde_json::to_string(&w))
            };
            match out {
                Ok(json) => {
                    println!("{}", json?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn dump_ast(format: AstFormat, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (source, name) = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("read stdin")?;
        (buf, "Dockerfile".to_owned())
    } else {
        let data = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        let name = file.file_name().map_or_else(
            || "Dockerfile".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        (data, name)
    };
    let text = match format {
        AstFormat::Buildkit => kiln_parser::dump_buildkit(&source),
        AstFormat::Json => kiln_parser::ast::parse_ast(&source)
            .map(|ast| serde_json::to_string_pretty(&ast).unwrap_or_default() + "\n"),
        AstFormat::Typed => kiln_parser::parse(&source)
            .map(|df| serde_json::to_string_pretty(&df).unwrap_or_default() + "\n"),
    };
    match text {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", e.with_file(&name));
            Ok(ExitCode::from(1))
        }
    }
}
