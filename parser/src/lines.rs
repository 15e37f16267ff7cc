//! The line reader (nom): physical lines, the BOM, parser directives (`# syntax=`,
//! `# escape=`, `# check=`), comments, line continuations with the escape character, empty
//! continuation lines and heredoc bodies, exactly as BuildKit's `parser.Parse` scans them.
//! It hands every logical instruction line, with the map from its bytes back to the file
//! ([`Segments`]), to [`crate::ast`] to be split into a node.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_until, take_while};
use nom::character::complete::{char, satisfy};
use nom::combinator::recognize;

use crate::ast::{Ast, Directive, Node, Warning};
use crate::error::{Error, Result, Span};
use crate::heredoc::{heredoc_markers, heredocs_from_line};

/// Go's `unicode.IsSpace`.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go regexp `\s`: `[\t\n\f\r ]`.
pub(crate) fn is_re_s(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// One physical line with its `\n` (the last line may have none), and the rest. Searched
/// as bytes, where nom's `take_until` is a `memchr`.
fn physical_line(input: &str) -> (&str, &str) {
    let found: IResult<&[u8], &[u8]> = take_until(&b"\n"[..]).parse(input.as_bytes());
    let n = found.map_or(input.len(), |(_, line)| line.len() + 1);
    (&input[n..], &input[..n])
}

/// `[a-zA-Z][a-zA-Z0-9]*`: a directive name.
fn directive_key(input: &str) -> IResult<&str, &str> {
    recognize((
        satisfy(|c| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ))
    .parse(input)
}

/// Go's `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on a left-trimmed line (BuildKit's
/// `reDirective`, after `#` and `unicode.IsSpace` blanks): the key and the value.
fn directive(line: &str) -> Option<(&str, &str)> {
    let parsed: IResult<&str, (&str, &str)> = (
        char('#'),
        take_while(is_space),
        directive_key,
        take_while(is_re_s),
        tag("="),
    )
        .map(|(_, _, key, _, eq)| (key, eq))
        .parse(line);
    let (value, (key, _)) = parsed.ok()?;
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    let trimmed = value.trim_start_matches(is_re_s).trim_end_matches(is_re_s);
    if trimmed.is_empty() {
        // All whitespace: the lazy group takes the last character.
        let last = value.char_indices().last()?.0;
        return Some((key, &value[last..]));
    }
    Some((key, trimmed))
}

/// The line without its trailing `\r` and `\n` characters.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// BuildKit `isComment`: `^\s*#` with `unicode.IsSpace`.
fn is_comment(s: &str) -> bool {
    let parsed: IResult<&str, &str> = recognize((take_while(is_space), char('#'))).parse(s);
    parsed.is_ok()
}

/// BuildKit's line-continuation regex `([^E])E[ \t]*$|^E[ \t]*$`, replaced by `$1`.
/// Returns the line without the escape and whether the line ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(body) = t.strip_suffix(escape) else {
        return (line, true);
    };
    match body.chars().last() {
        None => ("", false),
        Some(c) if c == escape => (line, true),
        Some(_) => (body, false),
    }
}

/// The directives state (BuildKit `directiveParser`).
struct Directives {
    escape: char,
    done: bool,
    found: Vec<Directive>,
}

impl Directives {
    /// BuildKit `ParseLine` + `setEscapeToken` on a left-trimmed line `n`. Returns whether
    /// the line was a directive; the error points at the directive's value.
    fn parse_line(&mut self, line: &str, n: usize, column: usize) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(false);
        };
        let k = key.to_ascii_lowercase();
        if !matches!(k.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        let at = |s: &str| {
            let start = offset_in(line, s);
            let col = column + line[..start].chars().count();
            Some(Span::new(n, col, n, col + s.chars().count()))
        };
        if self.found.iter().any(|d| d.name == k) {
            return Err(Error::at(
                n,
                n,
                at(key),
                format!("only one {k} parser directive can be used"),
            ));
        }
        if k == "escape" {
            match value {
                "`" => self.escape = '`',
                "\\" => self.escape = '\\',
                _ => {
                    return Err(Error::at(
                        n,
                        n,
                        at(value),
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ));
                }
            }
        }
        self.found.push(Directive {
            name: k,
            value: value.to_owned(),
            line: n,
        });
        Ok(true)
    }
}

/// Byte offset of `part` (a subslice of `whole`) in `whole`.
pub(crate) fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Where the bytes of a joined instruction line come from: one entry per physical line that
/// contributed text (continuations skip comments and empty lines).
#[derive(Debug, Default)]
pub(crate) struct Segments {
    /// (byte offset in the joined line, line number, column of that byte on its line).
    parts: Vec<(usize, usize, usize)>,
}

impl Segments {
    /// Forgets the segments of the previous line.
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
    }

    /// Records that byte `joined` of the joined line is at `(line, column)`.
    pub(crate) fn push(&mut self, joined: usize, line: usize, column: usize) {
        self.parts.push((joined, line, column));
    }

    /// The (line, column) of byte `at` of `joined` (its last segment's end for `at` past the
    /// end).
    pub(crate) fn position(&self, joined: &str, at: usize) -> (usize, usize) {
        let i = self.parts.partition_point(|p| p.0 <= at).saturating_sub(1);
        let Some(&(start, line, column)) = self.parts.get(i) else {
            return (1, 1);
        };
        let at = at.min(joined.len());
        let text = joined.get(start.min(at)..at).unwrap_or("");
        (line, column + count_chars(text))
    }

    /// The span from byte `start` (a character boundary) to the end of `joined`: a node's span.
    /// When the last segment has text, its end column is counted from that segment alone.
    pub(crate) fn tail_span(&self, joined: &str, start: usize) -> Span {
        match self.parts.last() {
            Some(&(from, line, column)) if from < joined.len() && from >= start => {
                let (l, c) = self.position(joined, start);
                let end = column + joined.get(from..).map_or(0, count_chars);
                Span::new(l, c, line, end)
            }
            _ => self.span(joined, start..joined.len()),
        }
    }

    /// The span of bytes `range` of `joined`, widened to character boundaries (the byte-wise
    /// flag scanner can end a flag inside a character).
    pub(crate) fn span(&self, joined: &str, range: std::ops::Range<usize>) -> Span {
        let mut start = range.start.min(joined.len());
        while !joined.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = range.end.clamp(start, joined.len());
        while !joined.is_char_boundary(end) {
            end += 1;
        }
        let (line, column) = self.position(joined, start);
        let (end_line, end_column) = match joined[start..end].char_indices().next_back() {
            // The end of the last character, on the line that character is on.
            Some((last, _)) => {
                let (l, c) = self.position(joined, start + last);
                (l, c + 1)
            }
            None => (line, column),
        };
        Span::new(line, column, end_line, end_column)
    }
}

/// The number of characters of `s` (its length when it is ASCII, the common case).
fn count_chars(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Everything [`Ast`] has except the nodes.
pub(crate) struct AstMeta {
    pub(crate) escape: char,
    pub(crate) directives: Vec<Directive>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) start_line: usize,
    pub(crate) end_line: usize,
}

/// The input still to read and the number of lines read so far.
struct Reader<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Reader<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (rest, line) = physical_line(self.rest);
        self.rest = rest;
        Some(line)
    }
}

/// The column (1-based, characters) after the blanks `trimmed` lost from `raw`.
fn column_after(raw: &str, trimmed: &str) -> usize {
    raw[..offset_in(raw, trimmed)].chars().count() + 1
}

/// The parser proper: hands every instruction node to `sink` as soon as it is complete (so
/// the typed layer can convert it while it is hot, without a file-sized vector), with the map
/// of its joined line ([`Node::original`]) for locating errors.
pub(crate) fn parse_nodes(source: &[u8], mut sink: impl FnMut(Node, &Segments)) -> Result<AstMeta> {
    let text = match std::str::from_utf8(source) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(source),
    };
    let text: &str = &text;
    let mut r = Reader {
        rest: text.strip_prefix('\u{feff}').unwrap_or(text),
        line: 0,
    };
    let mut d = Directives {
        escape: '\\',
        done: false,
        found: Vec::new(),
    };
    let mut root: Option<(usize, usize)> = None;
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut buf = String::new();
    let mut segments = Segments::default();

    while let Some(raw) = r.next_line() {
        let line_no = r.line + 1;
        let t = trim_newline(raw).trim_start_matches(is_space);
        let is_comment_line = t.starts_with('#');
        if is_comment_line {
            let comment = raw.get(1..).unwrap_or("").trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_owned());
            }
        }
        let column = column_after(raw, t);
        if d.parse_line(t, line_no, column)? {
            comments.pop();
        }
        let bytes = if is_comment_line { "" } else { t };
        r.line += 1;
        let start_line = r.line;
        let (bytes, mut eol) = trim_continuation(bytes, d.escape);
        if eol && bytes.is_empty() {
            continue;
        }
        buf.clear();
        segments.clear();
        segments.push(0, start_line, column);
        buf.push_str(bytes);
        let mut has_empty = false;
        while !eol {
            let Some(raw) = r.next_line() else { break };
            let t = trim_newline(raw);
            d.parse_line(t, r.line + 1, 1)?;
            r.line += 1;
            if is_comment(t) {
                continue;
            }
            let bytes = t;
            if bytes.trim_start_matches(is_space).is_empty() {
                has_empty = true;
                continue;
            }
            let (bytes, e) = trim_continuation(bytes, d.escape);
            eol = e;
            segments.push(buf.len(), r.line, 1);
            buf.push_str(bytes);
        }
        // A copy of exactly the line's length (`buf` keeps its capacity for the next one,
        // so a line with continuations is not regrown piece by piece).
        let line = buf.clone();
        if has_empty {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {line}"),
                line: r.line,
            });
        }
        let mut child = match crate::ast::node_from_line(line, d.escape) {
            Ok(child) => child,
            Err((f, line)) => return Err(f.at(start_line, r.line, &segments, &line)),
        };
        child.span = segments.tail_span(&child.original, child.parts.keyword.start);
        if let Some(t) = child.trigger.as_deref_mut() {
            t.span = segments.tail_span(&child.original, t.parts.keyword.start);
        }
        child.prev_comment = std::mem::take(&mut comments);
        if child.can_contain_heredoc() && child.original.contains("<<") {
            let heredocs = heredocs_from_line(&child.original).map_err(|e| {
                let span = segments.span(&child.original, 0..child.original.len());
                Error::at(start_line, r.line, Some(span), e)
            })?;
            for (index, mut heredoc) in heredocs.into_iter().enumerate() {
                let mut terminated = false;
                while let Some(raw) = r.next_line() {
                    r.line += 1;
                    let mut possible = trim_newline(raw);
                    if heredoc.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(raw);
                }
                if !terminated {
                    let marker = heredoc_markers(&child.original)
                        .nth(index)
                        .map(|m| segments.span(&child.original, m));
                    return Err(Error::at(
                        start_line,
                        r.line,
                        marker,
                        "unterminated heredoc",
                    ));
                }
                child.heredocs.push(heredoc);
            }
        }
        child.start_line = start_line;
        child.end_line = r.line;
        root.get_or_insert((start_line, 0)).1 = r.line;
        sink(child, &segments);
    }

    let Some((start_line, end_line)) = root else {
        let n = r.line.max(1);
        return Err(Error::at(
            n,
            n,
            Some(Span::new(n, 1, n, 1)),
            "file with no instructions",
        ));
    };
    Ok(AstMeta {
        escape: d.escape,
        directives: d.found,
        warnings,
        start_line,
        end_line,
    })
}

/// Parses a Dockerfile into BuildKit's AST. Invalid UTF-8 is replaced by U+FFFD first.
pub fn parse_ast(source: &[u8]) -> Result<Ast> {
    let mut children: Vec<Node> = Vec::with_capacity(source.len() / 64);
    let meta = parse_nodes(source, |node, _| children.push(node))?;
    Ok(Ast {
        children,
        escape: meta.escape,
        directives: meta.directives,
        warnings: meta.warnings,
        start_line: meta.start_line,
        end_line: meta.end_line,
    })
}
