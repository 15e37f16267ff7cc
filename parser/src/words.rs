//! Splitting one instruction line (nom): the keyword, the leading `--flag[=value]` words
//! (BuildKit `extractBuilderFlags`, byte-wise like upstream), BuildKit's `parseWords` (words
//! that keep their quotes and escapes, for ARG/ENV/LABEL), `name=value` lists and the
//! `reWhitespace` split. Every piece reports where it is in the line, for spans.

use std::ops::Range;

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, take, take_till, take_while, take_while1};
use nom::character::complete::{anychar, char};
use nom::combinator::{map, opt, value};
use nom::multi::fold_many0;
use nom::sequence::preceded;

use crate::lines::{is_space, offset_in};
use crate::quote::go_quote;

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
pub(crate) fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// The flag words (`--from=a`, quotes and escapes removed) and their byte ranges in the line.
pub(crate) type Flags = (Vec<String>, Vec<Range<usize>>);

/// BuildKit `splitCommand`: the keyword, the leading `--flags` (with their byte ranges in
/// `line` when `ranges` is set; errors ask for them again) and the trimmed rest.
pub(crate) fn split_command(line: &str, ranges: bool) -> (&str, Flags, &str) {
    let trimmed = line.trim();
    let parsed: IResult<&str, &str> = take_till(is_re_ws).parse(trimmed);
    let Ok((after, cmd)) = parsed else {
        return (trimmed, Flags::default(), "");
    };
    if after.is_empty() {
        return (cmd, Flags::default(), "");
    }
    let rest = after.trim_start_matches(is_re_ws);
    let base = offset_in(line, rest);
    let (args, mut flags) = extract_builder_flags(rest, ranges);
    for r in &mut flags.1 {
        *r = r.start + base..r.end + base;
    }
    (cmd, flags, args.trim())
}

/// Go's `unicode.IsSpace(rune(b))` for one byte (Latin-1: `0x85` and `0xa0` are blanks).
fn is_space_byte(b: u8) -> bool {
    is_space(char::from(b))
}

/// Appends bytes the way Go's `rune(line[pos])` reads them: each byte is one Latin-1 char.
fn push_latin1(word: &mut String, bytes: &[u8]) {
    if let Ok(ascii) = std::str::from_utf8(bytes)
        && ascii.is_ascii()
    {
        word.push_str(ascii);
    } else {
        word.extend(bytes.iter().map(|&b| char::from(b)));
    }
}

/// An escaped byte (`\x` → `x`; a `\` at the end is dropped).
fn escaped_byte(input: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(
        tag(&b"\\"[..]),
        map(opt(take(1usize)), Option::unwrap_or_default),
    )
    .parse(input)
}

/// A quoted part of a flag word (`"a b"`, `'x'`): its bytes without the quotes; an
/// unterminated quote runs to the end.
fn quoted_bytes(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (input, q) = alt((tag(&b"\""[..]), tag(&b"'"[..]))).parse(input)?;
    let q = q[0];
    let (input, bytes) = fold_many0(
        alt((take_while1(move |b| b != q && b != b'\\'), escaped_byte)),
        Vec::new,
        |mut acc: Vec<u8>, part: &[u8]| {
            acc.extend_from_slice(part);
            acc
        },
    )
    .parse(input)?;
    let (input, _) = opt(tag(&[q][..])).parse(input)?;
    Ok((input, bytes))
}

/// One flag word up to a blank: the word without quotes and escapes, and whether it had
/// quotes (an empty quoted word counts).
fn flag_word(input: &[u8]) -> IResult<&[u8], (String, bool)> {
    enum Part<'a> {
        Plain(&'a [u8]),
        Quoted(Vec<u8>),
    }
    fold_many0(
        alt((
            map(
                take_while1(|b| !is_space_byte(b) && !matches!(b, b'\'' | b'"' | b'\\')),
                Part::Plain,
            ),
            map(escaped_byte, Part::Plain),
            map(quoted_bytes, Part::Quoted),
        )),
        || (String::new(), false),
        |(mut word, quoted), part| match part {
            Part::Plain(b) => {
                push_latin1(&mut word, b);
                (word, quoted)
            }
            Part::Quoted(b) => {
                push_latin1(&mut word, &b);
                (word, true)
            }
        },
    )
    .parse(input)
}

/// `&line[pos..]`, moved forward to a character boundary (the byte-wise flag scanner can stop
/// inside a multi-byte character that contains a Latin-1 space byte).
fn tail(line: &str, mut pos: usize) -> &str {
    while pos < line.len() && !line.is_char_boundary(pos) {
        pos += 1;
    }
    line.get(pos..).unwrap_or("")
}

/// BuildKit `extractBuilderFlags`: the `--flag` words at the start of `line` (with their byte
/// ranges) and what follows them. A `--` word ends the flags.
fn extract_builder_flags(line: &str, ranges: bool) -> (&str, Flags) {
    let b = line.as_bytes();
    let mut words = Flags::default();
    let mut input = b;
    loop {
        let blanks: IResult<&[u8], &[u8]> = take_while(is_space_byte).parse(input);
        let Ok((after, _)) = blanks else { break };
        input = after;
        let pos = b.len() - input.len();
        if input.is_empty() {
            break;
        }
        if !input.starts_with(b"--") {
            return (tail(line, pos), words);
        }
        let Ok((after, (word, quoted))) = flag_word(input) else {
            break;
        };
        input = after;
        let end = b.len() - input.len();
        if word == "--" {
            if input.is_empty() {
                break;
            }
            return (tail(line, end), words);
        }
        if quoted || !word.is_empty() {
            words.0.push(word);
            if ranges {
                words.1.push(pos..end);
            }
        }
        if input.is_empty() {
            break;
        }
    }
    ("", words)
}

/// One word of `parseWords`: the text it spans, with a trailing lone escape dropped (the only
/// character BuildKit does not keep).
fn shell_word(escape: char) -> impl FnMut(&str) -> IResult<&str, &str> {
    move |input: &str| {
        let escaped = |i| {
            preceded(char(escape), opt(anychar))
                .map(|c: Option<char>| c.is_none())
                .parse(i)
        };
        let quoted = |i| {
            let (i, q) = alt((char('"'), char('\''))).parse(i)?;
            let (i, lone) = fold_many0(
                alt((
                    value(
                        false,
                        take_while1(move |c| c != q && (c != escape || q == '\'')),
                    ),
                    escaped,
                )),
                || false,
                |_, lone| lone,
            )
            .parse(i)?;
            let (i, _) = opt(char(q)).parse(i)?;
            Ok((i, lone))
        };
        let (rest, lone) = fold_many0(
            alt((
                value(
                    false,
                    take_while1(move |c| !is_space(c) && c != '\'' && c != '"' && c != escape),
                ),
                escaped,
                quoted,
            )),
            || false,
            |_, lone| lone,
        )
        .parse(input)?;
        let word = &input[..input.len() - rest.len()];
        let word = if lone && rest.is_empty() {
            &word[..word.len() - escape.len_utf8()]
        } else {
            word
        };
        Ok((rest, word))
    }
}

/// BuildKit `parseWords`: split on whitespace, keeping quotes and escapes.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut input = rest;
    let mut word = shell_word(escape);
    loop {
        input = input.trim_start_matches(is_space);
        if input.is_empty() {
            break;
        }
        let Ok((after, w)) = word(input) else { break };
        if !w.is_empty() {
            words.push(w.to_owned());
        }
        if after.len() == input.len() {
            break;
        }
        input = after;
    }
    words
}

/// Splits like Go's `reWhitespace.Split(s, n)` (`n` = 0 for all).
pub(crate) fn split_re_ws(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut input = s;
    loop {
        if n > 0 && out.len() + 1 == n {
            out.push(input);
            break;
        }
        let piece: IResult<&str, (&str, Option<&str>)> =
            (take_till(is_re_ws), opt(take_while1(is_re_ws))).parse(input);
        let Ok((after, (word, sep))) = piece else {
            out.push(input);
            break;
        };
        out.push(word);
        if sep.is_none() {
            break;
        }
        input = after;
    }
    out
}

/// ENV/LABEL arguments as BuildKit's `Next` chain (`key`, `value`, `=` or empty).
pub(crate) fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = split_re_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![
            parts[0].to_owned(),
            parts[1].to_owned(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in words {
        let Some(eq) = w.find('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(&w)
            ));
        };
        let mut k = w;
        let v = k.split_off(eq + 1);
        k.pop();
        out.push(k);
        out.push(v);
        out.push("=".to_owned());
    }
    Ok(out)
}

/// BuildKit `parseStringsWhitespaceDelimited`.
pub(crate) fn parse_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_re_ws(rest, 0)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_with_ranges() {
        let (cmd, flags, rest) = split_command("COPY  --from=a --chown=\"1 2\" x y", true);
        assert_eq!((cmd, rest), ("COPY", "x y"));
        assert_eq!(flags.0, ["--from=a", "--chown=1 2"]);
        assert_eq!(flags.1, [6..14, 15..28]);
        assert_eq!(split_command("RUN -- --x", false).2, "--x");
        assert_eq!(split_command("RUN --a=\\", false).1.0[0], "--a=");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words("a \"b c\" d\\ e 'f\\' g\\", '\\'),
            ["a", "\"b c\"", "d\\ e", "'f\\'", "g"]
        );
        assert_eq!(split_re_ws("a  b\tc", 2), ["a", "b\tc"]);
        assert_eq!(split_re_ws("a b ", 0), ["a", "b", ""]);
    }
}
