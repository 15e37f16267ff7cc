//! Property tests: no input, however malformed, makes the parser, the typed layer, the lexer
//! or the mount parser panic. Errors must still name a line.

use kiln_parser::shell::Lexer;
use kiln_parser::{RunMount, dump_buildkit, parse, parse_instruction};
use proptest::prelude::*;

/// Dockerfile-like text: lines built from the tokens that drive the parser's branches.
fn dockerfile_like() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "LABEL",
        "ARG",
        "ONBUILD",
        "HEALTHCHECK",
        "SHELL",
        "CMD",
        "ENTRYPOINT",
        "EXPOSE",
        "VOLUME",
        "USER",
        "WORKDIR",
        "STOPSIGNAL",
        "MAINTAINER",
        "AS",
        "NONE",
        "--mount=type=cache,target=/x",
        "--from=a",
        "--link",
        "--",
        "--x=",
        "<<EOF",
        "<<-'E O'",
        "3<<X",
        "EOF",
        "X",
        "\\",
        "`",
        "#",
        "# escape=`",
        "# syntax=x",
        "[\"a\",",
        "\"b\"]",
        "[1]",
        "'q",
        "\"",
        "$A",
        "${A:-b}",
        "${A/%/x}",
        "${",
        "=",
        "a=b",
        "\t",
        " ",
        "\r",
        "\u{feff}",
        "\u{a0}",
        "é",
        "\u{2005}",
        "\u{1F600}",
    ]);
    let line = prop::collection::vec(token, 0..8).prop_map(|t| t.join(" "));
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = dump_buildkit(&bytes);
        if let Err(e) = parse(&bytes) {
            prop_assert!(e.to_string().starts_with("Dockerfile:"), "{}", e);
        }
    }

    #[test]
    fn dockerfile_like_text_never_panics(text in dockerfile_like()) {
        let _ = dump_buildkit(text.as_bytes());
        if let Err(e) = parse(text.as_bytes()) {
            prop_assert!(e.line().is_some(), "{}", e);
        }
        let _ = parse_instruction(&text, '\\');
        let _ = parse_instruction(&text, '`');
    }

    #[test]
    fn lexer_never_panics(word in ".{0,64}", raw_q: bool, raw_e: bool, skip_q: bool, skip_u: bool,
                          backtick: bool) {
        let mut lex = Lexer::new(if backtick { '`' } else { '\\' });
        lex.raw_quotes = raw_q;
        lex.raw_escapes = raw_e;
        lex.skip_process_quotes = skip_q;
        lex.skip_unset_env = skip_u;
        let env = [("A", "a b"), ("B", ""), ("C", "x*y?z")];
        let _ = lex.process_word(&word, &env);
        let _ = lex.process_words(&word, &env);
    }

    #[test]
    fn lexer_patterns_never_panic(pat in "[a*?\\\\/}{%#:b-]{0,16}", val in "[ab\\n*]{0,16}") {
        let lex = Lexer::new('\\');
        let env = [("V", val.as_str())];
        for form in ["${V#", "${V##", "${V%", "${V%%", "${V/", "${V//"] {
            let _ = lex.process_word(&format!("{form}{pat}}}"), &env);
            let _ = lex.process_word(&format!("{form}{pat}/r}}"), &env);
        }
    }

    #[test]
    fn run_mount_never_panics(csv in ".{0,64}") {
        let _ = RunMount::parse(&csv);
    }
}
