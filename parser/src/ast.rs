//! The low-level Dockerfile AST, exactly as BuildKit's `frontend/dockerfile/parser` builds it:
//! parser directives, line continuations, comments, heredocs, flags and the per-instruction
//! argument shapes, plus BuildKit's `Node.Dump()` format. It does not validate instructions
//! (unknown ones still produce a node); that is the typed layer's job ([`crate::Instruction`]).

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{take_while, take_while1};

use crate::error::{Error, Result};
use crate::heredoc::heredocs_from_line;
pub use crate::heredoc::{Heredoc, chomp_heredoc_content, parse_heredoc};
use crate::quote::{go_quote, go_quote_list};

/// One instruction of BuildKit's AST: `value` is the keyword as written, `args` the values of
/// BuildKit's `Next` chain. ONBUILD's chain is a single node holding the trigger instruction,
/// kept here as `trigger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// The instruction keyword in its original case (`RUN`, `run`, `FOO` for unknown ones).
    pub value: String,
    /// The argument values (BuildKit's `Next` chain; an unknown instruction has one empty
    /// argument, like upstream).
    pub args: Vec<String>,
    /// ONBUILD's nested trigger instruction (its lines are 0).
    pub trigger: Option<Box<Node>>,
    /// Heredocs attached to the instruction (RUN/COPY/ADD, or ONBUILD of those).
    pub heredocs: Vec<Heredoc>,
    /// Whether the arguments came from the JSON (exec) form.
    pub json: bool,
    /// The instruction line after continuations were joined.
    pub original: String,
    /// `--flag[=value]` words, without quotes.
    pub flags: Vec<String>,
    /// First line (1-based; 0 for ONBUILD triggers).
    pub start_line: usize,
    /// Last line (1-based, includes heredoc terminators).
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub prev_comment: Vec<String>,
}

/// A parser directive from the top of the file (`# syntax=...`, `# escape=...`, `# check=...`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directive {
    /// The lowercased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// The line it is on (1-based).
    pub line: usize,
}

/// A non-fatal problem found while parsing (currently: empty continuation lines).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// BuildKit's short message, e.g. `Empty continuation line found in: RUN a b`.
    pub message: String,
    /// The line BuildKit reports it at (the instruction's last line).
    pub line: usize,
}

/// The result of parsing the syntax layer: the root's children plus file-level facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ast {
    /// One node per instruction.
    pub children: Vec<Node>,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives, in file order.
    pub directives: Vec<Directive>,
    /// Warnings (BuildKit prints them, the build goes on).
    pub warnings: Vec<Warning>,
    /// First line of the first instruction.
    pub start_line: usize,
    /// Last line of the last instruction.
    pub end_line: usize,
}

impl Node {
    /// BuildKit's `Node.Dump()` of this node.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        if let Some(t) = &self.trigger {
            s.push_str(" (");
            s.push_str(&t.dump());
            s.push(')');
        }
        s.trim().to_owned()
    }

    /// The argument values (BuildKit `nodeArgs`): an ONBUILD argument contributes the nested
    /// keyword followed by its arguments.
    pub fn args(&self) -> Vec<String> {
        let mut out = self.args.clone();
        if let Some(t) = &self.trigger {
            out.push(t.value.clone());
            out.extend(t.args());
        }
        out
    }

    fn can_contain_heredoc(&self) -> bool {
        let mut node = self;
        if node.value.eq_ignore_ascii_case("onbuild")
            && let Some(child) = &node.trigger
        {
            node = child;
        }
        let v = node.value.as_str();
        (v.eq_ignore_ascii_case("run")
            || v.eq_ignore_ascii_case("copy")
            || v.eq_ignore_ascii_case("add"))
            && !node.json
    }
}

impl Ast {
    /// BuildKit's dump of the whole file: one `(...)` line per instruction, `\n`-terminated.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for c in &self.children {
            s.push('(');
            s.push_str(&c.dump());
            s.push_str(")\n");
        }
        s
    }
}

/// Go's `unicode.IsSpace`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go regexp `\s`: `[\t\n\f\r ]`.
fn is_re_s(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// Splits like Go's `reWhitespace.Split(s, n)` (n = -1 for all).
fn split_re_ws(s: &str, n: isize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if n > 0 && out.len() as isize == n - 1 {
            out.push(rest);
            break;
        }
        match rest.find(is_re_ws) {
            None => {
                out.push(rest);
                break;
            }
            Some(i) => {
                out.push(&rest[..i]);
                let after = &rest[i..];
                let ws = after.len() - after.trim_start_matches(is_re_ws).len();
                rest = &after[ws..];
            }
        }
    }
    out
}

struct Directives {
    escape: char,
    done: bool,
    seen: Vec<String>,
    line: usize,
    found: Vec<Directive>,
}

/// `key \s* = \s* value` after the `#` (nom): the key is `[a-zA-Z][a-zA-Z0-9]*`.
fn directive_kv(input: &str) -> IResult<&str, (&str, &str)> {
    let (input, first) = take_while1(|c: char| c.is_ascii_alphabetic()).parse(input)?;
    let _ = first;
    let (input, _) = take_while(|c: char| c.is_ascii_alphanumeric()).parse(input)?;
    Ok((input, (first, "")))
}

impl Directives {
    fn new() -> Self {
        Directives {
            escape: '\\',
            done: false,
            seen: Vec::new(),
            line: 0,
            found: Vec::new(),
        }
    }

    /// BuildKit `DirectiveParser.ParseLine` + `setEscapeToken`. Returns whether the line was a
    /// directive.
    fn parse_line(&mut self, line: &str) -> std::result::Result<bool, String> {
        self.line += 1;
        if self.done {
            return Ok(false);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let rest = rest.trim_start_matches(is_space);
        let Some((key, value)) = match_directive(rest) else {
            self.done = true;
            return Ok(false);
        };
        let k = key.to_ascii_lowercase();
        if !matches!(k.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.contains(&k) {
            return Err(format!("only one {k} parser directive can be used"));
        }
        self.seen.push(k.clone());
        if k == "escape" {
            match value {
                "`" => self.escape = '`',
                "\\" => self.escape = '\\',
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
            }
        }
        self.found.push(Directive {
            name: k,
            value: value.to_owned(),
            line: self.line,
        });
        Ok(true)
    }
}

/// Go's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let (rest, _) = directive_kv(s).ok()?;
    let key = &s[..s.len() - rest.len()];
    let rest = rest.trim_start_matches(is_re_s);
    let rest = rest.strip_prefix('=')?;
    if rest.is_empty() || rest.contains('\n') {
        return None;
    }
    let trimmed = rest.trim_start_matches(is_re_s).trim_end_matches(is_re_s);
    if trimmed.is_empty() {
        // All whitespace: the lazy group takes the last character.
        let last = rest.char_indices().last()?.0;
        return Some((key, &rest[last..]));
    }
    Some((key, trimmed))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start_matches(is_space).starts_with('#')
}

fn is_empty_continuation_line(s: &str) -> bool {
    trim_newline(s).trim_start_matches(is_space).is_empty()
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

fn process_line<'a>(
    d: &mut Directives,
    token: &'a str,
    strip_left: bool,
) -> (&'a str, std::result::Result<bool, String>) {
    let mut t = trim_newline(token);
    if strip_left {
        t = t.trim_start_matches(is_space);
    }
    let r = d.parse_line(t);
    if is_comment(t) { ("", r) } else { (t, r) }
}

/// Parses a Dockerfile into BuildKit's AST. Invalid UTF-8 is replaced by U+FFFD first.
pub fn parse_ast(source: &[u8]) -> Result<Ast> {
    let mut children: Vec<Node> = Vec::with_capacity(source.len() / 64);
    let meta = parse_nodes(source, |node| children.push(node))?;
    Ok(Ast {
        children,
        escape: meta.escape,
        directives: meta.directives,
        warnings: meta.warnings,
        start_line: meta.start_line,
        end_line: meta.end_line,
    })
}

/// Everything [`Ast`] has except the nodes.
pub(crate) struct AstMeta {
    pub(crate) escape: char,
    pub(crate) directives: Vec<Directive>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) start_line: usize,
    pub(crate) end_line: usize,
}

/// The parser proper: hands every instruction node to `sink` as soon as it is complete (so
/// the typed layer can convert it while it is hot, without a file-sized vector).
pub(crate) fn parse_nodes(source: &[u8], mut sink: impl FnMut(Node)) -> Result<AstMeta> {
    let text = match std::str::from_utf8(source) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(source),
    };
    let mut lines = text.split_inclusive('\n');
    let mut d = Directives::new();
    let mut current_line = 0usize;
    let mut root_start: Option<usize> = None;
    let mut root_end = 0usize;
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut buf = String::new();

    while let Some(raw) = lines.next() {
        let raw = if current_line == 0 {
            raw.strip_prefix('\u{feff}').unwrap_or(raw)
        } else {
            raw
        };
        if is_comment(raw) {
            let comment = raw.get(1..).unwrap_or("").trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_owned());
            }
        }
        let (bytes, directive) = process_line(&mut d, raw, true);
        match directive {
            Ok(true) => {
                comments.pop();
            }
            Ok(false) => {}
            Err(e) => return Err(Error::syntax(current_line + 1, current_line + 1, e)),
        }
        current_line += 1;
        let start_line = current_line;
        let (bytes, mut eol) = trim_continuation(bytes, d.escape);
        if eol && bytes.is_empty() {
            continue;
        }
        buf.clear();
        buf.push_str(bytes);
        let mut has_empty = false;
        while !eol {
            let Some(raw) = lines.next() else { break };
            let (bytes, r) = process_line(&mut d, raw, false);
            if let Err(e) = r {
                return Err(Error::syntax(current_line + 1, current_line + 1, e));
            }
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if is_empty_continuation_line(bytes) {
                has_empty = true;
                continue;
            }
            let (bytes, e) = trim_continuation(bytes, d.escape);
            eol = e;
            buf.push_str(bytes);
        }
        let line = std::mem::take(&mut buf);
        if has_empty {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {line}"),
                line: current_line,
            });
        }
        let mut child = new_node_from_line(line, d.escape, std::mem::take(&mut comments))
            .map_err(|e| Error::syntax(start_line, current_line, e))?;
        if child.can_contain_heredoc() && child.original.contains("<<") {
            let heredocs = heredocs_from_line(&child.original)
                .map_err(|e| Error::syntax(start_line, current_line, e))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current_line += 1;
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
                    return Err(Error::syntax(
                        start_line,
                        current_line,
                        "unterminated heredoc",
                    ));
                }
                child.heredocs.push(heredoc);
            }
        }
        child.start_line = start_line;
        child.end_line = current_line;
        root_start.get_or_insert(start_line);
        root_end = current_line;
        sink(child);
    }

    let Some(start_line) = root_start else {
        return Err(Error::syntax(
            current_line.max(1),
            current_line.max(1),
            "file with no instructions",
        ));
    };
    Ok(AstMeta {
        escape: d.escape,
        directives: d.found,
        warnings,
        start_line,
        end_line: root_end,
    })
}

/// Parses one instruction line (continuations already joined, no heredoc bodies) into a node,
/// with the default escape character unless given. Used for ONBUILD triggers.
pub fn parse_line(line: &str, escape: char) -> Result<Node> {
    new_node_from_line(line.to_owned(), escape, Vec::new()).map_err(|e| Error::syntax(1, 1, e))
}

/// How many ONBUILD triggers may nest in one node (`ONBUILD ONBUILD ... RUN x`). BuildKit's
/// syntax layer nests any number (its typed layer then rejects every chain); a recursive
/// parse of 100,000 would abort on the stack here and copy the line once per level, so
/// deeper chains fail in the syntax layer already, with the typed layer's message.
const MAX_ONBUILD_NESTING: usize = 32;

pub(crate) const ONBUILD_CHAIN: &str = "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";

fn new_node_from_line(
    line: String,
    escape: char,
    comments: Vec<String>,
) -> std::result::Result<Node, String> {
    node_from_line(line, escape, comments, 0)
}

/// A node whose line is the trigger of `depth` enclosing ONBUILDs.
fn node_from_line(
    line: String,
    escape: char,
    comments: Vec<String>,
    depth: usize,
) -> std::result::Result<Node, String> {
    let (cmd, flags, args) = split_command(&line);
    let (args, trigger, json) = dispatch(cmd, args, escape, depth)?;
    let value = cmd.to_owned();
    Ok(Node {
        value,
        args,
        trigger,
        json,
        original: line,
        flags,
        prev_comment: comments,
        ..Node::default()
    })
}

fn arg(value: &str) -> String {
    value.to_owned()
}

/// The 18 instruction keywords, lowercase, so matching needs no allocation.
pub(crate) const KEYWORDS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Arguments, ONBUILD trigger, JSON form.
type Dispatched = std::result::Result<(Vec<String>, Option<Box<Node>>, bool), String>;
type Args = std::result::Result<(Vec<String>, bool), String>;

fn dispatch(cmd: &str, rest: &str, escape: char, depth: usize) -> Dispatched {
    let keyword = KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(cmd))
        .copied()
        .unwrap_or("");
    if keyword == "onbuild" {
        if rest.is_empty() {
            return Ok((Vec::new(), None, false));
        }
        if depth == MAX_ONBUILD_NESTING {
            return Err(ONBUILD_CHAIN.to_owned());
        }
        let child = node_from_line(rest.to_owned(), escape, Vec::new(), depth + 1)?;
        return Ok((Vec::new(), Some(Box::new(child)), false));
    }
    let (args, json) = match keyword {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "arg" => Ok((
            parse_words(rest, escape).iter().map(|w| arg(w)).collect(),
            false,
        )),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest),
        "env" => parse_name_val(rest, "ENV", escape),
        "label" => parse_name_val(rest, "LABEL", escape),
        "expose" | "from" => Ok((parse_whitespace_delimited(rest), false)),
        "healthcheck" => parse_health_config(rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Ok((Vec::new(), false))
            } else {
                Ok((vec![arg(rest)], false))
            }
        }
        _ => Ok((vec![String::new()], false)),
    }?;
    Ok((args, None, json))
}

/// BuildKit `splitCommand`: the keyword, the leading `--flags` and the trimmed rest.
fn split_command(line: &str) -> (&str, Vec<String>, &str) {
    let line = line.trim();
    match line.find(is_re_ws) {
        Some(i) => {
            let cmd = &line[..i];
            let rest = line[i..].trim_start_matches(is_re_ws);
            let (args, flags) = extract_builder_flags(rest);
            (cmd, flags, args.trim())
        }
        None => (line, Vec::new(), ""),
    }
}

/// `&line[pos..]`, moved forward to a character boundary (the byte-wise flag scanner can stop
/// inside a multi-byte character that contains a Latin-1 space byte).
fn tail(line: &str, mut pos: usize) -> &str {
    while pos < line.len() && !line.is_char_boundary(pos) {
        pos += 1;
    }
    line.get(pos..).unwrap_or("")
}

/// BuildKit `extractBuilderFlags`. Works byte-wise like upstream (a non-ASCII byte inside a
/// flag becomes the Latin-1 character of that value, as Go's `rune(line[pos])` does).
fn extract_builder_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_space(char::from(ch)) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (tail(line, pos), words);
            }
            if word.capacity() == 0 {
                // One buffer for every flag word (each is copied out exactly).
                word.reserve(b.len() - pos);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(char::from(ch)) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (tail(line, pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(word.clone());
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut ch = ch;
            if ch == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(char::from(ch));
            pos += 1;
            continue;
        }
        // Quote phase.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut ch = ch;
        if ch == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(char::from(ch));
        pos += 1;
    }
    ("", words)
}

/// BuildKit `parseWords`: split on whitespace, keeping quotes and escapes.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    // Same state machine as upstream, over byte positions (`pos` always on a char boundary).
    let n = rest.len();
    let at = |pos: usize| rest[pos..].chars().next().unwrap_or('\0');
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut sb = String::new();
    let mut pos = 0usize;
    while pos <= n {
        let mut ch = if pos < n { at(pos) } else { '\0' };
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if is_space(ch) {
                pos += ch.len_utf8();
                continue;
            }
            phase = Phase::Word;
        }
        if pos == n {
            if blank_ok || !sb.is_empty() {
                words.push(std::mem::take(&mut sb));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !sb.is_empty() {
                    words.push(sb.clone());
                }
                sb.clear();
                blank_ok = false;
                pos += ch.len_utf8();
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + ch.len_utf8() == n {
                    pos += ch.len_utf8();
                    continue;
                }
                sb.push(ch);
                pos += ch.len_utf8();
                ch = at(pos);
            }
            sb.push(ch);
            pos += ch.len_utf8();
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + ch.len_utf8() == n {
                phase = Phase::Word;
                pos += ch.len_utf8();
                continue;
            }
            pos += ch.len_utf8();
            sb.push(ch);
            ch = at(pos);
        }
        sb.push(ch);
        pos += ch.len_utf8();
    }
    words
}

fn kv(key: &str, value: &str, sep: &str) -> [String; 3] {
    [arg(key), arg(value), arg(sep)]
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Args {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok((Vec::new(), false));
    }
    if !words[0].contains('=') {
        let parts = split_re_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok((kv(parts[0], parts[1], "").into(), false));
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in &words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(w)
            ));
        };
        out.extend(kv(k, v, "="));
    }
    Ok((out, false))
}

fn parse_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_re_ws(rest, -1).into_iter().map(arg).collect()
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit `parseJSON`: `Ok(Some)` for a JSON array of strings, `Ok(None)` when the text is
/// not a JSON array (fall back to shell form), `Err` for an array with a non-string element.
fn parse_json(rest: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            serde_json::Value::String(s) => out.push(s),
            _ => return Err(NOT_STRING_ARRAY.to_owned()),
        }
    }
    Ok(Some(out))
}

fn parse_maybe_json(rest: &str) -> Args {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        Some(nodes) => Ok((nodes, true)),
        None => Ok((vec![arg(rest)], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Args {
    match parse_json(rest)? {
        Some(nodes) => Ok((nodes, true)),
        None => Ok((parse_whitespace_delimited(rest), false)),
    }
}

fn parse_health_config(rest: &str) -> Args {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let after = &rest[sep..];
    let next = &after[after.len() - after.trim_start_matches(is_space).len()..];
    let (cmd, json) = parse_maybe_json(next)?;
    let mut out = vec![arg(&rest[..sep])];
    out.extend(cmd);
    Ok((out, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse_ast(src.as_bytes()).unwrap().dump()
    }

    #[test]
    fn basic_dump() {
        assert_eq!(
            dump("FROM busybox\nRUN echo hi\n"),
            "(from \"busybox\")\n(run \"echo hi\")\n"
        );
        assert_eq!(
            dump("COPY --from=a --chown=1:1 [\"a\", \"b\"]\n"),
            "(copy [\"--from=a\" \"--chown=1:1\"] \"a\" \"b\")\n"
        );
        assert_eq!(
            dump("ENV A=1 B=\"x y\"\n"),
            "(env \"A\" \"1\" \"=\" \"B\" \"\\\"x y\\\"\" \"=\")\n"
        );
        assert_eq!(dump("ENV A 1 2\n"), "(env \"A\" \"1 2\" \"\")\n");
        assert_eq!(dump("ONBUILD RUN x\n"), "(onbuild (run \"x\"))\n");
        assert_eq!(dump("HEALTHCHECK\n"), "(healthcheck)\n");
        assert_eq!(dump("FOO bar\n"), "(foo \"\")\n");
    }

    #[test]
    fn continuations_comments_and_warnings() {
        let ast = parse_ast(b"RUN a \\\n# c\n  b \\\n\n  c\n").unwrap();
        assert_eq!(ast.dump(), "(run \"a   b   c\")\n");
        assert_eq!(ast.children[0].start_line, 1);
        assert_eq!(ast.children[0].end_line, 5);
        assert_eq!(ast.warnings.len(), 1);
    }

    #[test]
    fn directives() {
        let ast = parse_ast(b"# escape=`\n# syntax=x\nRUN a `\n b\n").unwrap();
        assert_eq!(ast.escape, '`');
        assert_eq!(ast.directives.len(), 2);
        let err = parse_ast(b"# escape=\\\n# ESCAPE=`\nFROM a\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dockerfile:2: only one escape parser directive can be used"
        );
        let err = parse_ast(b"# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(
            err.message(),
            "invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn heredocs() {
        let ast = parse_ast(b"RUN <<EOF 3<<-'END'\necho\nEOF\n\tx\n\tEND\nFROM a\n").unwrap();
        let h = &ast.children[0].heredocs;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].name.as_str(), h[0].expand, h[0].content.as_str()),
            ("EOF", true, "echo\n")
        );
        assert_eq!((h[1].fd, h[1].chomp, h[1].expand), (3, true, false));
        assert_eq!(h[1].chomped(), "x\n");
        assert_eq!(ast.children[0].end_line, 5);
        let err = parse_ast(b"RUN <<EOF\nx\n").unwrap_err();
        assert_eq!(err.to_string(), "Dockerfile:1: unterminated heredoc");
        // JSON form never has heredocs.
        let ast = parse_ast(b"RUN [\"<<EOF\"]\nFROM a\n").unwrap();
        assert!(ast.children[0].heredocs.is_empty());
    }

    #[test]
    fn json_fallback_and_errors() {
        assert_eq!(dump("CMD ['a']\n"), "(cmd \"['a']\")\n");
        let err = parse_ast(b"CMD [\"a\", 1]\n").unwrap_err();
        assert_eq!(err.message(), NOT_STRING_ARRAY);
        assert_eq!(
            parse_ast(b"\n# only\n").unwrap_err().message(),
            "file with no instructions"
        );
    }
}
