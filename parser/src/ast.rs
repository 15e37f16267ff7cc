//! The low-level Dockerfile AST, exactly as BuildKit's `frontend/dockerfile/parser` builds it:
//! parser directives, line continuations, comments, heredocs, flags and the per-instruction
//! argument shapes, plus BuildKit's `Node.Dump()` format. It does not validate instructions
//! (unknown ones still produce a node); that is the typed layer's job ([`crate::Instruction`]).

use std::ops::Range;

use crate::error::{Fault, Result, Span};
pub use crate::heredoc::{Heredoc, chomp_heredoc_content, parse_heredoc};
use crate::json::{Json, parse_json};
pub use crate::lines::parse_ast;
use crate::lines::{Segments, is_space, offset_in};
use crate::quote::{go_quote, go_quote_list};
use crate::words::{parse_name_val, parse_whitespace_delimited, parse_words, split_command};

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
    /// From the keyword to the end of the instruction line (heredoc bodies excluded; for an
    /// ONBUILD trigger, its part of the ONBUILD line).
    pub span: Span,
    /// Where the keyword, the flags and the arguments are, for errors.
    #[serde(skip)]
    pub(crate) parts: Parts,
}

/// Where a node's pieces are: byte ranges in the joined instruction line (an ONBUILD
/// trigger's too), turned into [`Span`]s only when an error needs one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    /// The instruction keyword.
    pub(crate) keyword: Range<usize>,
    /// The arguments after the flags (empty, after the keyword, when there are none).
    pub(crate) args: Range<usize>,
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

    pub(crate) fn can_contain_heredoc(&self) -> bool {
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

/// Parses one instruction line (continuations already joined, no heredoc bodies) into a node,
/// with the default escape character unless given. Used for ONBUILD triggers.
pub fn parse_line(line: &str, escape: char) -> Result<Node> {
    let mut segments = Segments::default();
    segments.push(0, 1, 1);
    let mut node = node_from_line(line.to_owned(), escape)
        .map_err(|(f, line)| f.at(1, 1, &segments, &line))?;
    node.span = segments.span(line, node.parts.keyword.start..line.len());
    Ok(node)
}

/// How many ONBUILD triggers may nest in one node (`ONBUILD ONBUILD ... RUN x`). BuildKit's
/// syntax layer nests any number (its typed layer then rejects every chain); a recursive
/// parse of 100,000 would abort on the stack here and copy the line once per level, so
/// deeper chains fail in the syntax layer already, with the typed layer's message.
const MAX_ONBUILD_NESTING: usize = 32;

pub(crate) const ONBUILD_CHAIN: &str = "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";

/// The node of one joined instruction line (its `span` is left for the caller, who knows
/// where the line's bytes come from). An error gives the line back, to locate the fault in.
pub(crate) fn node_from_line(
    line: String,
    escape: char,
) -> std::result::Result<Node, (Fault, String)> {
    match node_at(&line, &line, escape, 0) {
        Ok(mut node) => {
            node.original = line;
            Ok(node)
        }
        Err(f) => Err((f, line)),
    }
}

/// The node of `text`, a part of the joined line `joined` (all of it, or an ONBUILD's trigger
/// nested `depth` deep). `original` is left empty for the caller to fill.
fn node_at(
    joined: &str,
    text: &str,
    escape: char,
    depth: usize,
) -> std::result::Result<Node, Fault> {
    let (cmd, (flags, _), rest) = split_command(text, false);
    let range_of = |part: &str| {
        let start = offset_in(joined, part);
        start..start + part.len()
    };
    let keyword = range_of(cmd);
    let args_range = if rest.is_empty() {
        keyword.end..keyword.end
    } else {
        range_of(rest)
    };
    let at_args = |message: String| Fault {
        message,
        at: Some(args_range.clone()),
    };
    let keyword_lower = KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(cmd))
        .copied()
        .unwrap_or("");
    let mut trigger = None;
    let (args, json) = if keyword_lower == "onbuild" {
        if !rest.is_empty() {
            if depth == MAX_ONBUILD_NESTING {
                return Err(at_args(ONBUILD_CHAIN.to_owned()));
            }
            let mut child = node_at(joined, rest, escape, depth + 1)?;
            rest.clone_into(&mut child.original);
            trigger = Some(Box::new(child));
        }
        (Vec::new(), false)
    } else {
        dispatch(keyword_lower, rest, escape).map_err(at_args)?
    };
    Ok(Node {
        value: cmd.to_owned(),
        args,
        trigger,
        json,
        flags,
        parts: Parts {
            keyword,
            args: args_range,
        },
        ..Node::default()
    })
}

/// The byte range, in the joined line, of flag word `index` of the node whose text (its
/// [`Node::original`]) is `text` and whose keyword starts at byte `keyword` of the joined
/// line: found again only when an error needs it.
pub(crate) fn flag_range(text: &str, keyword: usize, index: usize) -> Option<Range<usize>> {
    let (cmd, (_, ranges), _) = split_command(text, true);
    let base = keyword.checked_sub(offset_in(text, cmd))?;
    ranges.get(index).map(|r| base + r.start..base + r.end)
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

/// Arguments and whether they came from the JSON form, or BuildKit's message.
type Args = std::result::Result<(Vec<String>, bool), String>;

/// BuildKit's per-instruction argument parsers (`dispatch` table) for a lowercase keyword
/// other than `onbuild` (empty for an unknown one).
fn dispatch(keyword: &str, rest: &str, escape: char) -> Args {
    match keyword {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "arg" => Ok((parse_words(rest, escape), false)),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest),
        "env" => Ok((parse_name_val(rest, "ENV", escape)?, false)),
        "label" => Ok((parse_name_val(rest, "LABEL", escape)?, false)),
        "expose" | "from" => Ok((parse_whitespace_delimited(rest), false)),
        "healthcheck" => parse_health_config(rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Ok((Vec::new(), false))
            } else {
                Ok((vec![rest.to_owned()], false))
            }
        }
        _ => Ok((vec![String::new()], false)),
    }
}

/// BuildKit `parseMaybeJSON`: the exec form, or the whole rest as one shell-form argument.
fn parse_maybe_json(rest: &str) -> Args {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Json::Strings(nodes) => Ok((nodes, true)),
        Json::NotStrings => Err(crate::json::NOT_STRING_ARRAY.to_owned()),
        Json::Invalid => Ok((vec![rest.to_owned()], false)),
    }
}

/// BuildKit `parseMaybeJSONToList`: the exec form, or whitespace-separated words.
fn parse_maybe_json_to_list(rest: &str) -> Args {
    match parse_json(rest) {
        Json::Strings(nodes) => Ok((nodes, true)),
        Json::NotStrings => Err(crate::json::NOT_STRING_ARRAY.to_owned()),
        Json::Invalid => Ok((parse_whitespace_delimited(rest), false)),
    }
}

/// BuildKit `parseHealthConfig`: the type word, then [`parse_maybe_json`].
fn parse_health_config(rest: &str) -> Args {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let after = &rest[sep..];
    let next = &after[after.len() - after.trim_start_matches(is_space).len()..];
    let (cmd, json) = parse_maybe_json(next)?;
    let mut out = vec![rest[..sep].to_owned()];
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
        assert_eq!(err.message(), crate::json::NOT_STRING_ARRAY);
        assert_eq!(
            parse_ast(b"\n# only\n").unwrap_err().message(),
            "file with no instructions"
        );
    }
}
