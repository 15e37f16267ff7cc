//! `kiln debug dump-ast` and `kiln debug expand`, driven through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write dockerfile");
    p.to_string_lossy().into_owned()
}

#[test]
fn dump_ast_buildkit_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM alpine AS b\nCOPY --from=a [\"x\", \"/y\"]\nENV A=1 B=\"2 3\"\nONBUILD RUN make \\\n  all\n",
    );
    let o = kiln(&["debug", "dump-ast", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "(from \"alpine\" \"AS\" \"b\")\n(copy [\"--from=a\"] \"x\" \"/y\")\n(env \"A\" \"1\" \"=\" \"B\" \"\\\"2 3\\\"\" \"=\")\n(onbuild (run \"make   all\"))\n"
    );
}

#[test]
fn dump_ast_json_has_lines_flags_and_heredocs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(
        dir.path(),
        "Dockerfile",
        "FROM a\nRUN --network=none <<EOF\necho hi\nEOF\n",
    );
    let o = kiln(&["debug", "dump-ast", "--format", "json", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let run = &v["children"][1];
    assert_eq!(run["value"], "RUN");
    assert_eq!(run["flags"][0], "--network=none");
    assert_eq!(
        (run["start_line"].as_u64(), run["end_line"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(run["heredocs"][0]["name"], "EOF");
    assert_eq!(run["heredocs"][0]["content"], "echo hi\n");

    let o = kiln(&["debug", "dump-ast", "--format", "typed", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["stages"][0]["base"], "a");
    assert_eq!(
        v["stages"][0]["instructions"][0]["instruction"]["Run"]["network"],
        "none"
    );
}

#[test]
fn dump_ast_invalid_file_fails_with_located_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "Dockerfile.bad", "FROM a\nCMD [\"a\", 1]\n");
    let o = kiln(&["debug", "dump-ast", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains(
            "Dockerfile.bad:2: when using JSON array syntax, arrays must be comprised of strings only"
        ),
        "{}",
        stderr(&o)
    );
    let f = write(dir.path(), "Dockerfile", "FROM a\nRUNN x\n");
    let o = kiln(&["debug", "dump-ast", "--format", "typed", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn expand_word_and_words() {
    let o = kiln(&[
        "debug",
        "expand",
        "--env",
        "A=x y",
        "--",
        "${A:-d}/\"$B\"'$A'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"x y/$A\"\n");
    let o = kiln(&[
        "debug",
        "expand",
        "--words",
        "--env",
        "A=x y",
        "--",
        "-a $A \"q r\"",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[\"-a\",\"x\",\"y\",\"q r\"]\n");
    let o = kiln(&["debug", "expand", "--escape", "`", "--", "a`$b"]);
    assert_eq!(stdout(&o), "\"a$b\"\n");
}

#[test]
fn expand_error_goes_to_stderr_with_exit_1() {
    let o = kiln(&["debug", "expand", "--", "${X:?must be set}"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("failed to process \"${X:?must be set}\": X: must be set"),
        "{}",
        stderr(&o)
    );
}
