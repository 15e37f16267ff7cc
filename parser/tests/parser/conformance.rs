//! BuildKit conformance: runs the parser and lexer against the data extracted from
//! moby/buildkit in `../shared/conformance/buildkit` (see its FORMATS.md). When the data is
//! absent the tests print `skipped: ...` and pass, except under CI, where they fail
//! (`kiln_testkit::skip`).

use std::path::{Path, PathBuf};

use kiln_parser::ast::{Node, parse_ast};
use kiln_parser::shell::Lexer;
use serde_json::{Value, json};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_CONFORMANCE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit"),
        PathBuf::from,
    );
    if dir.join("FORMATS.md").is_file() {
        return Some(dir);
    }
    kiln_testkit::skip(
        "parser conformance",
        &format!("no conformance data at {}", dir.display()),
    );
    None
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Our node in the shape of the golden JSON (empty fields omitted like the Go dumper does).
fn node_json(n: &Node) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("value".into(), json!(n.value));
    let mut next: Vec<Value> = n
        .args
        .iter()
        .map(|a| json!({"value": a, "start_line": 0, "end_line": 0}))
        .collect();
    if let Some(t) = &n.trigger {
        next.push(json!({"value": "", "children": [node_json(t)], "start_line": 0, "end_line": 0}));
    }
    if !next.is_empty() {
        m.insert("next".into(), Value::Array(next));
    }
    if !n.heredocs.is_empty() {
        let h: Vec<Value> = n
            .heredocs
            .iter()
            .map(|h| {
                json!({"name": h.name, "fd": h.fd, "expand": h.expand, "chomp": h.chomp,
                       "content": h.content})
            })
            .collect();
        m.insert("heredocs".into(), Value::Array(h));
    }
    if !n.flags.is_empty() {
        m.insert("flags".into(), json!(n.flags));
    }
    if n.json {
        m.insert("attributes".into(), json!({"json": true}));
    }
    if !n.original.is_empty() {
        m.insert("original".into(), json!(n.original));
    }
    m.insert("start_line".into(), json!(n.start_line));
    m.insert("end_line".into(), json!(n.end_line));
    if !n.prev_comment.is_empty() {
        m.insert("prev_comment".into(), json!(n.prev_comment));
    }
    Value::Object(m)
}

fn check_ast_entry(dir: &Path, entry: &Value, failures: &mut Vec<String>) {
    let file = entry["file"].as_str().unwrap_or_default();
    let path = dir.join(file);
    let src = read(&path);
    let ast = match parse_ast(&src) {
        Ok(a) => a,
        Err(e) => {
            failures.push(format!("{file}: unexpected error {e}"));
            return;
        }
    };
    let dump = ast.dump();
    let want = entry["dump"].as_str().unwrap_or_default();
    if dump.trim_end_matches('\n') != want {
        failures.push(format!(
            "{file}: dump differs\n got: {dump:?}\nwant: {want:?}"
        ));
    }
    let want_ast = &entry["ast"];
    for (i, child) in ast.children.iter().enumerate() {
        let got = node_json(child);
        if want_ast["children"][i] != got {
            failures.push(format!(
                "{file}: child {i} differs\n got: {got}\nwant: {}",
                want_ast["children"][i]
            ));
        }
    }
    if want_ast["children"].as_array().map_or(0, Vec::len) != ast.children.len() {
        failures.push(format!("{file}: child count differs"));
    }
    if want_ast["start_line"] != json!(ast.start_line)
        || want_ast["end_line"] != json!(ast.end_line)
    {
        failures.push(format!("{file}: root lines differ"));
    }
    let escape = entry["escape_token"].as_str().unwrap_or("\\");
    if escape != ast.escape.to_string() {
        failures.push(format!("{file}: escape token differs"));
    }
    let want_warnings: Vec<&str> = entry["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let got_warnings: Vec<&str> = ast.warnings.iter().map(|w| w.message.as_str()).collect();
    if want_warnings != got_warnings {
        failures.push(format!(
            "{file}: warnings differ\n got: {got_warnings:?}\nwant: {want_warnings:?}"
        ));
    }
}

#[test]
fn parser_testfiles_dump_identically() {
    let Some(dir) = data_dir() else { return };
    let root = dir.join("frontend/dockerfile/parser/testfiles");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testfiles dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let src = read(&case.join("Dockerfile"));
        let want = String::from_utf8(read(&case.join("result"))).expect("utf-8 result");
        match kiln_parser::dump_buildkit(&src) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}:\n got: {got:?}\nwant: {want:?}",
                case.display()
            )),
            Err(e) => failures.push(format!("{}: error {e}", case.display())),
        }
    }
    println!(
        "testfiles: {}/{} identical",
        cases.len() - failures.len(),
        cases.len()
    );
    assert_eq!(cases.len(), 33, "expected 33 testfiles");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parser_full_ast_matches_go() {
    let Some(dir) = data_dir() else { return };
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in read_json(&dir.join("derived/parser-ast-testfiles.json"))
        .as_array()
        .expect("array")
    {
        n += 1;
        check_ast_entry(&dir, entry, &mut failures);
    }
    for entry in read_json(&dir.join("derived/parser-ast-other.json"))
        .as_array()
        .expect("array")
    {
        if entry.get("ast").is_some() {
            n += 1;
            check_ast_entry(&dir, entry, &mut failures);
        }
    }
    println!(
        "full ASTs: {}/{n} files without difference",
        n - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_testfiles_are_rejected_with_buildkit_messages() {
    let Some(dir) = data_dir() else { return };
    let mut count = 0;
    for entry in read_json(&dir.join("derived/parser-ast-other.json"))
        .as_array()
        .expect("array")
    {
        let Some(want) = entry.get("error").and_then(Value::as_str) else {
            continue;
        };
        count += 1;
        let file = entry["file"].as_str().unwrap_or_default();
        let err = kiln_parser::parse(&read(&dir.join(file)))
            .expect_err(&format!("{file} must be rejected"));
        assert_eq!(err.message(), want, "{file}");
        assert!(err.to_string().starts_with("Dockerfile:"), "{err}");
    }
    assert_eq!(count, 4);
}

#[test]
fn testfile_line_numbers() {
    let Some(dir) = data_dir() else { return };
    let src = read(&dir.join("frontend/dockerfile/parser/testfile-line/Dockerfile"));
    let ast = parse_ast(&src).expect("parses");
    assert_eq!((ast.start_line, ast.end_line), (5, 31));
    let lines: Vec<(usize, usize)> = ast
        .children
        .iter()
        .map(|c| (c.start_line, c.end_line))
        .collect();
    assert_eq!(lines, [(5, 5), (11, 12), (17, 31)]);
}

fn env_var_test_env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[test]
fn env_var_test_linux_rows() {
    let Some(dir) = data_dir() else { return };
    let text =
        String::from_utf8(read(&dir.join("frontend/dockerfile/shell/envVarTest"))).expect("utf-8");
    let env = env_var_test_env();
    let lex = Lexer::new('\\');
    let (mut total, mut failures) = (0, Vec::new());
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 3, "bad line {line:?}");
        if f[0] == "W" {
            continue;
        }
        total += 1;
        let got = lex.process_word(f[1], &env);
        let ok = match (&got, f[2]) {
            (Err(_), "error") => true,
            (Ok(w), want) => w == want,
            _ => false,
        };
        if !ok {
            failures.push(format!("{:?}: got {got:?}, want {:?}", f[1], f[2]));
        }
    }
    println!(
        "envVarTest: {}/{total} Linux rows pass",
        total - failures.len()
    );
    assert_eq!(total, 228);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn words_test_cases() {
    let Some(dir) = data_dir() else { return };
    let text =
        String::from_utf8(read(&dir.join("frontend/dockerfile/shell/wordsTest"))).expect("utf-8");
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = Lexer::new('\\');
    let (mut total, mut failures) = (0, Vec::new());
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest.split_once('=').expect("ENV k=v");
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let (input, expected) = line.split_once('|').expect("INPUT | EXPECTED");
        let input = input.trim();
        let expected = expected.trim_start_matches(' ');
        total += 1;
        let got = lex.process_words(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(words), want) => *words == want.split(',').collect::<Vec<_>>(),
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: got {got:?}, want {expected:?}"));
        }
    }
    println!("wordsTest: {}/{total} cases pass", total - failures.len());
    assert_eq!(total, 24);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lex_golden_all_modes() {
    let Some(dir) = data_dir() else { return };
    let records = read_json(&dir.join("derived/lex-golden.json"));
    let records = records.as_array().expect("array");
    let mut failures = Vec::new();
    for r in records {
        let flag = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
        let mut lex = Lexer::new('\\');
        lex.raw_quotes = flag("raw_quotes");
        lex.raw_escapes = flag("raw_escapes");
        lex.skip_process_quotes = flag("skip_process_quotes");
        lex.skip_unset_env = flag("skip_unset_env");
        let env: Vec<(String, String)> = r["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let input = r["input"].as_str().unwrap_or_default();
        let id = format!("{} [{}] {input:?}", r["source"], r["mode"]);
        match (lex.process_word_with_matches(input, &env), r.get("error")) {
            (Ok(x), None) => {
                if json!(x.word) != r["word"] {
                    failures.push(format!("{id}: word {:?} != {}", x.word, r["word"]));
                }
                let strs = |k: &str| -> Vec<String> {
                    r.get(k)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let matched: Vec<String> = x.matched.into_iter().collect();
                let unmatched: Vec<String> = x.unmatched.into_iter().collect();
                if matched != strs("matched") || unmatched != strs("unmatched") {
                    failures.push(format!(
                        "{id}: matched {matched:?}/{unmatched:?} != {:?}/{:?}",
                        strs("matched"),
                        strs("unmatched")
                    ));
                }
            }
            (Err(e), Some(want)) => {
                if json!(e.message()) != *want {
                    failures.push(format!("{id}: error {:?} != {want}", e.message()));
                }
            }
            (got, want) => failures.push(format!("{id}: got {got:?}, want error {want:?}")),
        }
        match (lex.process_words(input, &env), r.get("words_error")) {
            (Ok(words), None) => {
                let want = r.get("words").cloned().unwrap_or_else(|| json!([]));
                if json!(words) != want {
                    failures.push(format!("{id}: words {words:?} != {want}"));
                }
            }
            (Err(e), Some(want)) => {
                if json!(e.message()) != *want {
                    failures.push(format!("{id}: words error {:?} != {want}", e.message()));
                }
            }
            (got, want) => failures.push(format!("{id}: words got {got:?}, want error {want:?}")),
        }
    }
    println!(
        "lex-golden: {}/{} records match (word, words, errors, matches)",
        records.len() - failures.len().min(records.len()),
        records.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
