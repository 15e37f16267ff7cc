//! Heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`): recognising marker words the way
//! BuildKit does (a regex over words found by the shell lexer, quoting detected by lexing
//! twice) and chomping tabs. Reading the bodies is the line parser's job ([`crate::ast`]).

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_while};
use nom::character::complete::digit0;
use nom::combinator::{all_consuming, opt};

use crate::shell::{Lexer, NoEnv};

/// Go regexp `\s`: `[\t\n\f\r ]`.
fn is_re_s(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// A heredoc (`<<EOF ... EOF`) attached to an instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (`EOF`); also the file name for COPY/ADD.
    pub name: String,
    /// The file descriptor prefix (`3<<EOF`), 0 when absent.
    pub fd: u64,
    /// Whether the content is expanded (the delimiter was not quoted). BuildKit expands it
    /// with the `skip_process_quotes` lexer mode.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from content lines (see [`Heredoc::chomped`]).
    pub chomp: bool,
    /// The raw content lines, each with its line ending, terminator excluded.
    pub content: String,
}

impl Heredoc {
    /// The content with leading tabs stripped from every line when `chomp` is set
    /// (BuildKit's `ChompHeredocContent`), otherwise as is.
    pub fn chomped(&self) -> String {
        if self.chomp {
            chomp_heredoc_content(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Removes leading tabs from every line (BuildKit `ChompHeredocContent`).
pub fn chomp_heredoc_content(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// `^(\d*)<<(-?)\s*([^<]*)$` (nom): fd digits, chomp flag, rest.
fn heredoc_marker(input: &str) -> IResult<&str, (&str, bool, &str)> {
    let (input, fd) = digit0(input)?;
    let (input, _) = tag("<<")(input)?;
    let (input, dash) = opt(tag("-")).parse(input)?;
    let (input, _) = take_while(is_re_s).parse(input)?;
    let (input, rest) = all_consuming(take_while(|c: char| c != '<')).parse(input)?;
    Ok((input, (fd, dash.is_some(), rest)))
}

/// BuildKit `ParseHeredoc`: recognises a heredoc marker word such as `<<EOF`, `<<-"EOF"` or
/// `3<<EOF`. Returns `Ok(None)` when the word is not a heredoc marker.
pub fn parse_heredoc(word: &str) -> std::result::Result<Option<Heredoc>, String> {
    let Ok((_, (fd, chomp, rest))) = heredoc_marker(word) else {
        return Ok(None);
    };
    let fd: u64 = if fd.is_empty() {
        0
    } else {
        fd.parse().unwrap_or(u64::MAX)
    };
    if rest.is_empty() {
        return Ok(None);
    }
    // Fast path: without quotes, escapes, `$`, `<`, blanks or a BOM the lexer returns `rest`
    // itself as the single word in both modes.
    if !rest
        .chars()
        .any(|c| matches!(c, '\'' | '"' | '\\' | '$' | '<' | '\u{feff}') || c.is_whitespace())
    {
        return Ok(Some(Heredoc {
            name: rest.to_owned(),
            fd,
            expand: true,
            chomp,
            content: String::new(),
        }));
    }
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex
        .process_words(rest, &NoEnv)
        .map_err(|e| e.message().to_owned())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let words_raw = lex
        .process_words(rest, &NoEnv)
        .map_err(|e| e.message().to_owned())?;
    if words_raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = count(&words[0]) == count(&words_raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

pub(crate) fn heredocs_from_line(line: &str) -> std::result::Result<Vec<Heredoc>, String> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        // A marker word holds `<<` (`heredoc_marker`); the others need no parse.
        if !w.contains("<<") {
            continue;
        }
        if let Some(h) = parse_heredoc(&w)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// The byte ranges of the heredoc marker words (`<<EOF`, `3<<-"X"`) in `line`, in order:
/// where an unterminated heredoc is reported.
pub(crate) fn heredoc_markers(line: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(i) = line.get(from..)?.find("<<") {
            let at = from + i;
            let start = at - line[..at].len()
                + line[..at]
                    .trim_end_matches(|c: char| c.is_ascii_digit())
                    .len();
            let end = line[at..]
                .find(char::is_whitespace)
                .map_or(line.len(), |e| at + e);
            from = end.max(at + 2);
            if matches!(parse_heredoc(&line[start..end]), Ok(Some(_))) {
                return Some(start..end);
            }
        }
        None
    })
}
