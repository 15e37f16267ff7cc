//! JSON arrays of the exec form (nom), read the way BuildKit's `parseJSON` reads them with
//! Go's `encoding/json` into `[]any`: an array of strings is the exec form, a valid array with
//! another element is an error, and anything else (invalid JSON, trailing text, a number out
//! of `float64` range, nesting deeper than Go's 10,000) falls back to the shell form.
//!
//! Nested values are skipped with an explicit stack, so a hostile `[[[[...` costs no
//! recursion.

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while_m_n, take_while1};
use nom::character::complete::{char, one_of};
use nom::combinator::{opt, recognize};

use crate::lines::is_space;

/// BuildKit's `errDockerfileNotStringArray`.
pub(crate) const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Go's `maxNestingDepth` in `encoding/json`.
const MAX_DEPTH: usize = 10_000;

/// What `parseJSON` makes of a line's arguments.
pub(crate) enum Json {
    /// A JSON array of strings: the exec form.
    Strings(Vec<String>),
    /// A valid JSON array with an element that is not a string.
    NotStrings,
    /// Not a JSON array: the shell form.
    Invalid,
}

/// JSON whitespace.
fn ws(input: &str) -> IResult<&str, &str> {
    take_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r')).parse(input)
}

/// Four hex digits of a `\u` escape.
fn hex4(input: &str) -> IResult<&str, u32> {
    let (rest, digits) = take_while_m_n(4, 4, |c: char| c.is_ascii_hexdigit()).parse(input)?;
    Ok((rest, u32::from_str_radix(digits, 16).unwrap_or(0xfffd)))
}

/// A JSON string, decoded like Go: a lone surrogate becomes U+FFFD.
fn string(input: &str) -> IResult<&str, String> {
    let (mut input, _) = char('"').parse(input)?;
    let mut out = String::new();
    loop {
        // The plain run, scanned as bytes: every byte that ends it is ASCII.
        let plain: IResult<&[u8], &[u8]> =
            take_while(|b: u8| b != b'"' && b != b'\\' && b >= b' ').parse(input.as_bytes());
        let n = plain.map_or(0, |(_, run)| run.len());
        out.push_str(&input[..n]);
        input = &input[n..];
        if let Ok((rest, _)) = char::<_, ()>('"').parse(input) {
            return Ok((rest, out));
        }
        let (rest, _) = char('\\').parse(input)?;
        let (rest, e) = one_of("\"\\/bfnrtu").parse(rest)?;
        input = rest;
        let c = match e {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let (rest, hi) = hex4(input)?;
                input = rest;
                if (0xd800..0xdc00).contains(&hi) {
                    // A surrogate pair `\uD83D\uDE00`, or U+FFFD.
                    let pair: IResult<&str, u32> =
                        (tag("\\u"), hex4).map(|(_, lo)| lo).parse(input);
                    match pair {
                        Ok((rest, lo)) if (0xdc00..0xe000).contains(&lo) => {
                            input = rest;
                            char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                                .unwrap_or('\u{fffd}')
                        }
                        _ => '\u{fffd}',
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{fffd}')
                }
            }
            other => other,
        };
        out.push(c);
    }
}

/// A JSON number (Go's grammar); `Err` also when it does not fit a `float64`, which makes
/// Go's `Unmarshal` into `any` fail.
fn number(input: &str) -> IResult<&str, &str> {
    let digits = |i| take_while1(|c: char| c.is_ascii_digit()).parse(i);
    let (rest, n) = recognize((
        opt(char('-')),
        alt((
            tag("0"),
            recognize((
                one_of("123456789"),
                take_while(|c: char| c.is_ascii_digit()),
            )),
        )),
        opt((char('.'), digits)),
        opt((one_of("eE"), opt(one_of("+-")), digits)),
    ))
    .parse(input)?;
    if n.parse::<f64>().is_ok_and(f64::is_finite) {
        Ok((rest, n))
    } else {
        Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::Float,
        )))
    }
}

/// `true`, `false`, `null` or a number.
fn scalar(input: &str) -> IResult<&str, &str> {
    alt((tag("true"), tag("false"), tag("null"), number)).parse(input)
}

/// Skips one JSON value that starts with `[` or `{` (already seen: `open`), iteratively.
/// `depth` is the nesting of the value's container.
fn skip_container(mut input: &str, open: char, depth: usize) -> Option<&str> {
    // The open containers: `]` or `}` expected, and whether a member was seen.
    let mut stack: Vec<(char, bool)> = vec![(if open == '[' { ']' } else { '}' }, false)];
    if depth + 1 > MAX_DEPTH {
        return None;
    }
    loop {
        input = ws(input).ok()?.0;
        let &(close, seen) = stack.last()?;
        if let Some(rest) = input.strip_prefix(close) {
            stack.pop();
            input = rest;
            if stack.is_empty() {
                return Some(input);
            }
            continue;
        }
        if seen {
            input = ws(char::<_, ()>(',').parse(input).ok()?.0).ok()?.0;
        }
        if let Some(top) = stack.last_mut() {
            top.1 = true;
        }
        if close == '}' {
            let (rest, _) = string(input).ok()?;
            input = ws(rest).ok()?.0;
            input = ws(char::<_, ()>(':').parse(input).ok()?.0).ok()?.0;
        }
        if let Some(rest) = input.strip_prefix('[') {
            stack.push((']', false));
            input = rest;
        } else if let Some(rest) = input.strip_prefix('{') {
            stack.push(('}', false));
            input = rest;
        } else if input.starts_with('"') {
            input = string(input).ok()?.0;
        } else {
            input = scalar(input).ok()?.0;
        }
        if depth + stack.len() > MAX_DEPTH {
            return None;
        }
    }
}

/// BuildKit `parseJSON` on the arguments of CMD/ENTRYPOINT/RUN/SHELL/ADD/COPY/VOLUME.
pub(crate) fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start_matches(is_space);
    let Some(mut input) = rest.strip_prefix('[') else {
        return Json::Invalid;
    };
    let mut strings = Vec::new();
    let mut all_strings = true;
    let mut first = true;
    loop {
        let Ok((i, _)) = ws(input) else {
            return Json::Invalid;
        };
        input = i;
        if let Some(after) = input.strip_prefix(']') {
            let Ok((after, _)) = ws(after) else {
                return Json::Invalid;
            };
            if !after.is_empty() {
                return Json::Invalid;
            }
            return if all_strings {
                Json::Strings(strings)
            } else {
                Json::NotStrings
            };
        }
        if !first {
            let Some(after) = input.strip_prefix(',') else {
                return Json::Invalid;
            };
            let Ok((after, _)) = ws(after) else {
                return Json::Invalid;
            };
            input = after;
        }
        first = false;
        if input.starts_with('"') {
            let Ok((after, s)) = string(input) else {
                return Json::Invalid;
            };
            strings.push(s);
            input = after;
            continue;
        }
        all_strings = false;
        let next = match input.chars().next() {
            Some(open @ ('[' | '{')) => skip_container(&input[1..], open, 1),
            _ => scalar(input).ok().map(|(r, _)| r),
        };
        let Some(after) = next else {
            return Json::Invalid;
        };
        input = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Option<Vec<String>> {
        match parse_json(s) {
            Json::Strings(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn arrays_like_go() {
        assert_eq!(strings(" [\"a\", \"b\\u00e9\"] ").unwrap(), ["a", "bé"]);
        assert_eq!(strings("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            strings("[\"\\ud83d\\ude00\", \"\\ud800\"]").unwrap(),
            ["😀", "\u{fffd}"]
        );
        assert!(matches!(parse_json("[\"a\", 1]"), Json::NotStrings));
        assert!(matches!(
            parse_json("[{\"k\": [1, null]}, \"a\"]"),
            Json::NotStrings
        ));
        for invalid in [
            "['a']",
            "[\"a\"] x",
            "[\"a\",]",
            "[1e400]",
            "[01]",
            "[\"\t\"]",
            "[\"a\"",
        ] {
            assert!(matches!(parse_json(invalid), Json::Invalid), "{invalid}");
        }
        let deep = format!("[{}{}]", "[".repeat(9_999), "]".repeat(9_999));
        assert!(matches!(parse_json(&deep), Json::NotStrings));
        let deeper = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_json(&deeper), Json::Invalid));
    }
}
