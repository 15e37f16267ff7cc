//! Where on its line a syntax error points: the 1-based column, in characters, of the
//! offending token (the unknown instruction word, the bad flag, the start of the JSON array,
//! the unterminated heredoc marker, the bad `--mount` field).
//!
//! The syntax and typed layers report BuildKit's messages, which name the offending token;
//! the token is found again on the instruction's first line here. Tokens on continuation lines
//! get no column.

/// The column (1-based, in characters) of the token a syntax error names on `line`, the
/// instruction's first line as written (without its newline), if it can be found there.
///
/// `message` is BuildKit's wording without the `Dockerfile:LINE: ` prefix, e.g.
/// `unknown flag: foo` or (from [`crate::RunMount::parse`], which the solver calls after
/// expanding the `--mount` word) `unexpected key 'colour' in 'colour=red'`.
///
/// ```
/// let line = "RUN --mount=type=cache,colour=red make";
/// assert_eq!(kiln_parser::error_column(line, "unexpected key 'colour' in 'colour=red'"), Some(24));
/// assert_eq!(kiln_parser::error_column(line, "exit code: 1"), None);
/// ```
pub fn error_column(line: &str, message: &str) -> Option<usize> {
    let byte = locate_byte(line, message)?;
    Some(line[..byte].chars().count() + 1)
}

fn locate_byte(line: &str, message: &str) -> Option<usize> {
    let word_start = line.len() - line.trim_start().len();
    if message.starts_with("unknown instruction: ") {
        return (word_start < line.len()).then_some(word_start);
    }
    // The arguments: after the instruction word.
    let word_end = line[word_start..]
        .find(char::is_whitespace)
        .map_or(line.len(), |i| word_start + i);
    let args_start = word_end + (line.len() - word_end - line[word_end..].trim_start().len());
    if let Some(name) = flag_name(message) {
        return find_flag(
            line,
            args_start,
            name,
            message.starts_with("duplicate flag"),
        );
    }
    if message.starts_with("when using JSON array syntax") {
        return line[args_start..].find('[').map(|i| args_start + i);
    }
    if message.ends_with("requires the arguments to be in JSON form") {
        return (args_start < line.len()).then_some(args_start);
    }
    if message == "unterminated heredoc" {
        return line.rfind("<<");
    }
    let field = mount_field(message)?;
    let from = line[args_start..]
        .find("--mount")
        .map_or(args_start, |i| args_start + i);
    find_field(line, from, &field)
}

/// The flag a flag error names (`unknown flag: foo (did you mean ...)` → `foo`).
fn flag_name(message: &str) -> Option<&str> {
    let rest = [
        "unknown flag: ",
        "duplicate flag specified: ",
        "missing a value on flag: ",
    ]
    .iter()
    .find_map(|p| message.strip_prefix(p));
    if let Some(rest) = rest {
        return rest.split_whitespace().next();
    }
    let rest = message.strip_prefix("expecting boolean value for flag ")?;
    rest.split(',').next()
}

/// `--name` as a whole token (followed by `=`, a space or the end) from `from` on: the first
/// occurrence, or the last one for a duplicate.
fn find_flag(line: &str, from: usize, name: &str, last: bool) -> Option<usize> {
    let needle = format!("--{name}");
    let mut found = None;
    let mut at = from;
    while let Some(i) = line[at..].find(&needle) {
        let start = at + i;
        let end = start + needle.len();
        let boundary = line[end..]
            .chars()
            .next()
            .is_none_or(|c| c == '=' || c.is_whitespace());
        let preceded = line[..start]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        if boundary && preceded {
            found = Some(start);
            if !last {
                break;
            }
        }
        at = end;
    }
    found
}

/// The `--mount` field a mount error names, as it is written (`key=value` or `key`).
fn mount_field(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unexpected key '") {
        // `unexpected key 'KEY' in 'FIELD'`
        let (_, field) = rest.split_once("' in '")?;
        return Some(field.split('\'').next()?.to_owned());
    }
    if let Some(rest) = message.strip_prefix("invalid field '") {
        return Some(rest.split('\'').next()?.to_owned());
    }
    if let Some(rest) = message.strip_prefix("unsupported mount type ") {
        return Some(format!("type={}", rest.trim_matches('"')));
    }
    if let Some(rest) = message.strip_prefix("invalid value for ") {
        let (key, value) = rest.split_once(": ")?;
        return Some(format!("{key}={value}"));
    }
    if let Some(rest) = message.strip_prefix("invalid value ") {
        // `invalid value VALUE for uid`
        let (value, key) = rest.rsplit_once(" for ")?;
        return Some(format!("{key}={value}"));
    }
    None
}

/// `field` starting a CSV field (after `=`, `,` or a space) from `from` on.
fn find_field(line: &str, from: usize, field: &str) -> Option<usize> {
    if field.is_empty() {
        return None;
    }
    let mut at = from;
    while let Some(i) = line[at..].find(field) {
        let start = at + i;
        if line[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c == '=' || c == ',' || c.is_whitespace())
        {
            return Some(start);
        }
        at = start + field.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::{Error, RunMount, error_column, parse, parse_instruction};

    fn err(text: &str) -> Error {
        parse(text.as_bytes()).unwrap_err()
    }

    fn at(text: &str) -> (Option<usize>, Option<usize>, String) {
        let e = err(text);
        (e.line(), e.column(), e.message().to_owned())
    }

    #[test]
    fn unknown_instruction_with_leading_spaces() {
        let (line, column, message) = at("FROM a\n   RUNN x\n");
        assert_eq!((line, column), (Some(2), Some(4)));
        assert_eq!(message, "unknown instruction: RUNN (did you mean RUN?)");
        // Display is unchanged: BuildKit's wording, no column.
        assert_eq!(
            err("FROM a\n   RUNN x\n").to_string(),
            "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"
        );
        // Tabs and non-ASCII text count as one character each.
        assert_eq!(err("FROM a\n\tRÜNN x\n").column(), Some(2));
    }

    #[test]
    fn unknown_flag_after_other_flags() {
        let (line, column, message) = at("FROM a\nCOPY --chown=1 --link --foo=x a /b\n");
        assert_eq!((line, column), (Some(2), Some(23)));
        assert!(message.starts_with("unknown flag: foo"), "{message}");
        // A flag whose name is a prefix of an earlier one is found as a whole token.
        assert_eq!(err("FROM a\nCOPY --link --lin a /b\n").column(), Some(13));
        assert_eq!(
            err("FROM a\nCOPY --from=a --from=b a /b\n").column(),
            Some(15)
        );
    }

    #[test]
    fn bad_json() {
        let (line, column, message) = at("FROM a\nCMD  [\"a\", 1]\n");
        assert_eq!((line, column), (Some(2), Some(6)));
        assert_eq!(
            message,
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
        assert_eq!(err("FROM a\nSHELL /bin/sh -c\n").column(), Some(7));
    }

    #[test]
    fn bad_mount_key() {
        // `--mount` is checked when the solver expands it: the error has no line yet, the
        // caller locates it on the RUN line.
        let line = "RUN --mount=type=cache,target=/c,colour=red make";
        let e = RunMount::parse("type=cache,target=/c,colour=red").unwrap_err();
        assert_eq!(e.message(), "unexpected key 'colour' in 'colour=red'");
        assert_eq!(error_column(line, e.message()), Some(34));
        let e = RunMount::parse("type=nope,target=/c").unwrap_err();
        assert_eq!(
            error_column("RUN --mount=type=nope,target=/c make", e.message()),
            Some(13)
        );
        let e = RunMount::parse("type=cache,uid=x").unwrap_err();
        assert_eq!(
            error_column("RUN  --mount=type=cache,uid=x make", e.message()),
            Some(25)
        );
        let e = RunMount::parse("type=cache,rw,nonsense").unwrap_err();
        assert_eq!(
            error_column("RUN --mount=type=cache,rw,nonsense make", e.message()),
            Some(27)
        );
        assert_eq!(
            e.message(),
            "invalid field 'nonsense' must be a key=value pair"
        );
    }

    #[test]
    fn unterminated_heredoc() {
        let (line, column, message) = at("FROM a\nRUN cat <<EOF\nhello\n");
        assert_eq!(
            (line, column, message.as_str()),
            (Some(2), Some(9), "unterminated heredoc")
        );
    }

    #[test]
    fn no_column_when_the_token_is_not_on_the_first_line() {
        let e = err("FROM a\nCOPY \\\n  --foo b /c\n");
        assert_eq!((e.line(), e.column()), (Some(2), None));
        assert_eq!(err("FROM a\nCOPY\n").column(), None);
    }

    #[test]
    fn single_instructions_and_file_names_keep_the_column() {
        let e = parse_instruction("RUN --nope x", '\\').unwrap_err();
        assert_eq!(e.column(), Some(5));
        let e = err("FROM a\n RUNN x\n").with_file("Dockerfile.dev");
        assert_eq!(e.column(), Some(2));
    }
}
