//! Issue 12, "Bad input": hostile Dockerfiles must give an error or a result, never abort the
//! process (stack overflow) or take quadratic time. Deep inputs are checked on an 8 MiB stack
//! (a main thread) and on a 2 MiB one (a std or rayon worker thread), in debug builds too.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kiln_parser::shell::{Lexer, NoEnv};
use kiln_parser::{Command, Instruction, KeyValue, parse};

/// 100,000 levels: far beyond anything a recursive lexer survives on these stacks.
const DEEP: usize = 100_000;

/// Runs `f` on a thread with a `stack`-byte stack, on both stack sizes the issue names.
fn on_small_and_main_stacks(f: fn()) {
    for stack in [8 << 20, 2 << 20] {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .expect("spawn test thread")
            .join()
            .unwrap_or_else(|_| panic!("failed on a {stack}-byte stack"));
    }
}

fn pairs(text: &[u8]) -> Vec<KeyValue> {
    let df = parse(text).expect("parses");
    match &df.stages[0].instructions[0].instruction {
        Instruction::Env(kvs) | Instruction::Label(kvs) => kvs.clone(),
        other => panic!("not ENV/LABEL: {other:?}"),
    }
}

/// `${a:-` repeated: unterminated (an error) and terminated (expands to `x`).
fn check_nested_default(keyword: &str) {
    let open = "${a:-".repeat(DEEP);
    let kvs = pairs(format!("FROM scratch\n{keyword} k={open}\n").as_bytes());
    assert_eq!(kvs.len(), 1);
    let err = Lexer::new('\\')
        .process_word(&kvs[0].value, &NoEnv)
        .expect_err("unterminated substitution");
    assert!(
        err.message().starts_with("failed to process \"${a:-${a:-"),
        "{err}"
    );
    assert!(
        err.message().ends_with(": syntax error: missing '}'"),
        "{err}"
    );

    let closed = format!("{open}x{}", "}".repeat(DEEP));
    let kvs = pairs(format!("FROM scratch\n{keyword} k={closed}\n").as_bytes());
    let lex = Lexer::new('\\');
    assert_eq!(lex.process_word(&kvs[0].value, &NoEnv).as_deref(), Ok("x"));
    let env = [("a", "set")];
    assert_eq!(lex.process_word(&kvs[0].value, &env).as_deref(), Ok("set"));
    assert_eq!(
        lex.process_words(&kvs[0].value, &NoEnv),
        Ok(vec!["x".into()])
    );
    // Inside double quotes each level goes through the quote handling as well.
    let quoted = format!("{}x{}", "\"${a:-".repeat(DEEP), "}\"".repeat(DEEP));
    assert_eq!(lex.process_word(&quoted, &NoEnv).as_deref(), Ok("x"));
}

#[test]
fn issue12_nested_default_100k_deep_in_env_does_not_abort() {
    on_small_and_main_stacks(|| check_nested_default("ENV"));
}

#[test]
fn issue12_nested_default_100k_deep_in_label_does_not_abort() {
    on_small_and_main_stacks(|| check_nested_default("LABEL"));
}

#[test]
fn issue12_nested_default_100k_deep_in_heredoc_line_does_not_abort() {
    on_small_and_main_stacks(|| {
        // Terminated: the marker is found and the body read.
        let nested = format!("{}x{}", "${a:-".repeat(DEEP), "}".repeat(DEEP));
        let src = format!("FROM scratch\nADD <<EOF {nested} /dest/\nhello\nEOF\n");
        let df = parse(src.as_bytes()).expect("parses");
        let Instruction::Add(add) = &df.stages[0].instructions[0].instruction else {
            panic!("not ADD");
        };
        assert_eq!(add.sources, [nested]);
        assert_eq!(add.dest, "/dest/");
        assert_eq!(add.source_contents.len(), 1);
        assert_eq!(add.source_contents[0].data, "hello\n");
        assert_eq!(df.stages[0].instructions[0].lines(), 2..=4);

        // Unterminated: like BuildKit, a line the lexer rejects has no heredocs, so the body
        // lines are instructions of their own.
        let src = format!(
            "FROM scratch\nADD <<EOF {} /dest/\nzzzzzz\nEOF\n",
            "${a:-".repeat(DEEP)
        );
        let err = parse(src.as_bytes()).expect_err("body lines are instructions");
        assert_eq!(err.to_string(), "Dockerfile:3: unknown instruction: zzzzzz");
    });
}

#[test]
fn issue12_onbuild_chain_100k_deep_does_not_abort() {
    on_small_and_main_stacks(|| {
        let src = format!("FROM scratch\n{}RUN x\n", "ONBUILD ".repeat(DEEP));
        let err = parse(src.as_bytes()).expect_err("chained ONBUILD");
        assert_eq!(
            err.to_string(),
            "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert!(kiln_parser::dump_buildkit(src.as_bytes()).is_err());
        // The chains BuildKit's AST keeps are still dumped exactly.
        assert_eq!(
            kiln_parser::dump_buildkit(b"ONBUILD ONBUILD ONBUILD RUN x\n").as_deref(),
            Ok("(onbuild (onbuild (onbuild (run \"x\"))))\n")
        );
    });
}

#[test]
fn issue12_json_array_100k_deep_does_not_abort() {
    on_small_and_main_stacks(|| {
        // Not an array of strings: shell form, as BuildKit falls back to.
        let json = format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP));
        let df = parse(format!("FROM scratch\nCMD {json}\n").as_bytes()).expect("parses");
        assert_eq!(
            df.stages[0].instructions[0].instruction,
            Instruction::Cmd(Command::Shell(json))
        );
    });
}

/// Debug builds are several times slower than release; the bound is for both.
const LINEAR_BOUND: Duration = Duration::from_secs(if cfg!(debug_assertions) { 5 } else { 1 });

#[test]
fn issue12_env_100k_pairs_parse_in_linear_time() {
    for keyword in ["ENV", "LABEL"] {
        let mut src = format!("FROM scratch\n{keyword}");
        for i in 0..100_000 {
            let _ = writeln!(src, " K{i}=v \\");
        }
        src.push_str(" LAST=\"a b\"\n");
        let start = Instant::now();
        let kvs = pairs(src.as_bytes());
        let lex = Lexer::new('\\');
        let mut expanded = 0;
        for kv in &kvs {
            expanded += lex.process_word(&kv.key, &NoEnv).map_or(0, |k| k.len());
            expanded += lex.process_word(&kv.value, &NoEnv).map_or(0, |v| v.len());
        }
        let took = start.elapsed();
        assert_eq!(kvs.len(), 100_001);
        assert_eq!((kvs[7].key.as_str(), kvs[7].value.as_str()), ("K7", "v"));
        assert_eq!(kvs[100_000].value, "\"a b\"");
        assert!(expanded > 600_000);
        assert!(took < LINEAR_BOUND, "{keyword}: 100k pairs took {took:?}");
    }
}

#[test]
fn issue12_copy_with_40k_heredocs_parses_in_linear_time() {
    let n = 40_000;
    let mut src = String::from("FROM scratch\nCOPY");
    for i in 0..n {
        let _ = write!(src, " <<H{i}");
    }
    src.push_str(" /dest/\n");
    for i in 0..n {
        let _ = write!(src, "body {i}\nH{i}\n");
    }
    let start = Instant::now();
    let df = parse(src.as_bytes()).expect("parses");
    let took = start.elapsed();
    let Instruction::Copy(copy) = &df.stages[0].instructions[0].instruction else {
        panic!("not COPY");
    };
    assert!(copy.sources.is_empty());
    assert_eq!(copy.source_contents.len(), n);
    let last = &copy.source_contents[n - 1];
    assert_eq!(
        (last.path.as_str(), last.data.as_str()),
        ("H39999", "body 39999\n")
    );
    assert_eq!(copy.source_contents[7].data, "body 7\n");
    assert!(took < LINEAR_BOUND, "40k heredocs took {took:?}");
}
