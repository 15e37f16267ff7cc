//! Spans set where errors are raised and carried on nodes: the line, column and end of the
//! offending token (columns 1-based, in characters, end exclusive).

use kiln_parser::ast::parse_ast;
use kiln_parser::{Error, RunMount, Span, parse, parse_instruction};

fn err(text: &str) -> Error {
    parse(text.as_bytes()).unwrap_err()
}

fn span(text: &str) -> (usize, Span, String) {
    let e = err(text);
    let span = e.span().unwrap_or_else(|| panic!("no span: {e}"));
    (e.line().expect("located"), span, e.message().to_owned())
}

#[test]
fn unknown_instruction_points_at_the_keyword() {
    let (line, s, message) = span("FROM a\n   RUNN x\n");
    assert_eq!((line, s), (2, Span::new(2, 4, 2, 8)));
    assert_eq!(message, "unknown instruction: RUNN (did you mean RUN?)");
    // Display is BuildKit's wording, no column.
    assert_eq!(
        err("FROM a\n   RUNN x\n").to_string(),
        "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"
    );
    // Tabs and non-ASCII text count as one character each.
    assert_eq!(
        err("FROM a\n\tRÜNN x\n").span(),
        Some(Span::new(2, 2, 2, 6))
    );
    // After a UTF-8 BOM the first line's columns start after it.
    assert_eq!(err("\u{feff}RUNN x\n").column(), Some(1));
}

#[test]
fn flag_errors_point_at_the_flag() {
    let (line, s, message) = span("FROM a\nCOPY --chown=1 --link --foo=x a /b\n");
    assert_eq!((line, s), (2, Span::new(2, 23, 2, 30)));
    assert!(message.starts_with("unknown flag: foo"), "{message}");
    // A flag whose name is a prefix of an earlier one, and the second of a duplicate.
    assert_eq!(err("FROM a\nCOPY --link --lin a /b\n").column(), Some(13));
    assert_eq!(
        err("FROM a\nCOPY --from=a --from=b a /b\n").span(),
        Some(Span::new(2, 15, 2, 23))
    );
    // Quoted flag values: the span covers the word as written.
    assert_eq!(
        err("FROM a\nRUN --network=\"no pe\" x\n").span(),
        Some(Span::new(2, 5, 2, 22))
    );
}

#[test]
fn tokens_on_continuation_lines_keep_their_own_line() {
    let e = err("FROM a\nCOPY \\\n  --foo b /c\n");
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.span(), Some(Span::new(3, 3, 3, 8)));
    // The column is of the error's first line only.
    assert_eq!(e.column(), None);
    // Comments and empty lines inside the continuation are skipped.
    let e = err("FROM a\nRUN \\\n# c\n\n  --nope=1 x\n");
    assert_eq!(e.span(), Some(Span::new(5, 3, 5, 11)));
    // A span across lines ends on the line of its last character.
    let e = err("FROM a\nSHELL sh \\\n  -c\n");
    assert_eq!(
        e.message(),
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(e.span(), Some(Span::new(2, 7, 3, 5)));
}

#[test]
fn argument_errors_point_at_the_arguments() {
    let (_, s, message) = span("FROM a\nCMD  [\"a\", 1]\n");
    assert_eq!(s, Span::new(2, 6, 2, 14));
    assert_eq!(
        message,
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(err("FROM a\nSHELL /bin/sh -c\n").column(), Some(7));
    assert_eq!(err("FROM a b\n").span(), Some(Span::new(1, 6, 1, 9)));
    // No arguments: an empty span just after the keyword.
    assert_eq!(err("FROM a\nCOPY\n").span(), Some(Span::new(2, 5, 2, 5)));
    // ONBUILD triggers are located inside the ONBUILD line.
    assert_eq!(
        err("FROM a\nONBUILD COPY --nope a b\n").span(),
        Some(Span::new(2, 14, 2, 20))
    );
}

#[test]
fn heredoc_directive_and_file_errors() {
    let (line, s, message) = span("FROM a\nRUN cat <<EOF\nhello\n");
    assert_eq!(
        (line, s, message.as_str()),
        (2, Span::new(2, 9, 2, 14), "unterminated heredoc")
    );
    // The second heredoc of the line is the unterminated one.
    let e = err("FROM a\nRUN cat <<A 3<<-B\nx\nA\n");
    assert_eq!(e.span(), Some(Span::new(2, 13, 2, 18)));
    let (line, s, _) = span("# escape=\\\n  # ESCAPE=`\nFROM a\n");
    assert_eq!((line, s), (2, Span::new(2, 5, 2, 11)));
    let (_, s, _) = span("#escape = x\nFROM a\n");
    assert_eq!(s, Span::new(1, 11, 1, 12));
    let (line, s, message) = span("\n# only\n");
    assert_eq!(
        (line, s.line, message.as_str()),
        (2, 2, "file with no instructions")
    );
    let (_, s, message) = span("RUN x\n");
    assert_eq!(
        (s, message.as_str()),
        (Span::new(1, 1, 1, 6), "no build stage in current context")
    );
}

#[test]
fn single_instructions_and_file_names_keep_the_span() {
    let e = parse_instruction("RUN --nope x", '\\').unwrap_err();
    assert_eq!(e.span(), Some(Span::new(1, 5, 1, 11)));
    let e = parse_instruction("RUN `\n --nope x", '`').unwrap_err();
    assert_eq!((e.line(), e.span()), (Some(1), Some(Span::new(2, 2, 2, 8))));
    let e = err("FROM a\n RUNN x\n").with_file("Dockerfile.dev");
    assert_eq!(e.column(), Some(2));
    assert!(e.to_string().starts_with("Dockerfile.dev:2: "));
}

#[test]
fn nodes_carry_their_span() {
    let ast =
        parse_ast(b"FROM a\n  RUN a \\\n  b\nCOPY <<EOF /x\nhi\nEOF\nONBUILD RUN y\n").unwrap();
    let spans: Vec<Span> = ast.children.iter().map(|n| n.span).collect();
    assert_eq!(
        spans,
        [
            Span::new(1, 1, 1, 7),
            Span::new(2, 3, 3, 4),
            Span::new(4, 1, 4, 14),
            Span::new(7, 1, 7, 14),
        ]
    );
    let trigger = ast.children[3].trigger.as_deref().expect("trigger");
    assert_eq!(trigger.span, Span::new(7, 9, 7, 14));
}

#[test]
fn mount_errors_name_the_field() {
    let csv = "type=cache,target=/c,colour=red";
    let e = RunMount::parse(csv).unwrap_err();
    assert_eq!(e.message(), "unexpected key 'colour' in 'colour=red'");
    assert_eq!(e.mount_field().map(|r| &csv[r]), Some("colour=red"));
    let csv = "type=nope,target=/c";
    let e = RunMount::parse(csv).unwrap_err();
    assert_eq!(e.mount_field().map(|r| &csv[r]), Some("type=nope"));
    let csv = "type=cache,uid=x";
    let e = RunMount::parse(csv).unwrap_err();
    assert_eq!(e.mount_field().map(|r| &csv[r]), Some("uid=x"));
    let csv = "type=cache,rw,nonsense";
    let e = RunMount::parse(csv).unwrap_err();
    assert_eq!(e.mount_field().map(|r| &csv[r]), Some("nonsense"));
    assert_eq!(
        e.message(),
        "invalid field 'nonsense' must be a key=value pair"
    );
    // Not one field's fault: no range.
    let e = RunMount::parse("type=tmpfs,mode=0700").unwrap_err();
    assert_eq!(e.mount_field(), None);
    // A mount error located at a line keeps its message.
    assert_eq!(
        e.at_line(3, 3).to_string(),
        "Dockerfile:3: mode not allowed for \"tmpfs\" type mounts"
    );
}

#[test]
fn stages_and_instructions_carry_their_span() {
    let df = parse(b"ARG V=1\n FROM a AS b\nRUN x \\\n  y\nCOPY <<EOF /f\nbody\nEOF\n").unwrap();
    assert_eq!(df.global[0].span, Span::new(1, 1, 1, 8));
    let stage = &df.stages[0];
    assert_eq!(stage.span, Span::new(2, 2, 2, 13));
    let spans: Vec<Span> = stage.instructions.iter().map(|l| l.span).collect();
    assert_eq!(spans, [Span::new(3, 1, 4, 4), Span::new(5, 1, 5, 14)]);
    // Heredoc bodies count in the lines, not in the span.
    assert_eq!(stage.instructions[1].lines(), 5..=7);
    let l = parse_instruction("RUN a `\n  b", '`').unwrap();
    assert_eq!(l.span, Span::new(1, 1, 2, 4));
}

/// The flag scanner is byte-wise like BuildKit's: a Latin-1 blank byte inside a UTF-8
/// character (U+00A0 is `c2 a0`) ends the flag word mid-character. Its span must not slice
/// the line there (this panicked).
#[test]
fn a_flag_ending_inside_a_character_is_located() {
    let e = err("FROM a\nRUN --network=none\u{a0}x y\n");
    assert!(e.message().starts_with("unsupported network mode"), "{e}");
    assert_eq!(e.span(), Some(Span::new(2, 5, 2, 20)));
}
