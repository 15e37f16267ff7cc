//! The typed instruction layer through the public API: every instruction's shape, stages,
//! meta ARGs, ONBUILD re-parsing and BuildKit's error messages with their line numbers.

use kiln_parser::{Command, Error, Healthcheck, Instruction, Located, parse, parse_instruction};

fn one(text: &str) -> Instruction {
    parse_instruction(text, '\\')
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .instruction
}

fn err(src: &str) -> String {
    parse(src.as_bytes()).expect_err(src).to_string()
}

#[test]
fn stages_global_args_and_lines() {
    let df = parse(
        b"\xEF\xBB\xBF# syntax=docker/dockerfile:1\r\nARG BASE=alpine\r\nARG V\r\n\
FROM --platform=$BUILDPLATFORM ${BASE} AS Build\r\nRUN make \\\r\n  install\r\n\
FROM scratch\r\nCOPY --from=build /out /\r\n",
    )
    .expect("parses");
    assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1"));
    assert_eq!(df.global.len(), 2);
    assert_eq!(df.stages.len(), 2);
    let b = &df.stages[0];
    assert_eq!(b.base, "${BASE}");
    assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(b.name.as_deref(), Some("build"));
    assert_eq!((b.start_line, b.end_line), (4, 4));
    assert_eq!(
        b.original,
        "FROM --platform=$BUILDPLATFORM ${BASE} AS Build"
    );
    let run: &Located = &b.instructions[0];
    assert_eq!(run.lines(), 5..=6);
    assert_eq!(run.original, "RUN make   install");
    assert_eq!(df.stages[1].index, 1);
    assert_eq!(df.stage("BUILD").map(|s| s.index), Some(0));
    assert_eq!(df.stage("1").map(|s| s.base.as_str()), Some("scratch"));
}

#[test]
fn run_flags_and_forms() {
    match one(
        "RUN --mount=type=cache,target=/c --mount=type=secret,id=s --network=none --security=insecure make",
    ) {
        Instruction::Run(r) => {
            assert_eq!(r.mounts, ["type=cache,target=/c", "type=secret,id=s"]);
            assert_eq!(r.network.as_deref(), Some("none"));
            assert_eq!(r.security.as_deref(), Some("insecure"));
            assert_eq!(r.command, Command::Shell("make".into()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        one("CMD [\"a\", \"b c\"]"),
        Instruction::Cmd(Command::Exec(vec!["a".into(), "b c".into()]))
    );
    assert_eq!(
        one("ENTRYPOINT ['a']"),
        Instruction::Entrypoint(Command::Shell("['a']".into()))
    );
    match one("RUN <<EOF\necho $HOME\nEOF") {
        Instruction::Run(r) => {
            assert_eq!(r.heredocs.len(), 1);
            assert_eq!(r.heredocs[0].content, "echo $HOME\n");
            assert!(r.heredocs[0].expand);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_and_add_flags_and_heredoc_sources() {
    match one(
        "COPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=x a b <<-'EOF' /dst/\n\thello $X\n\tEOF",
    ) {
        Instruction::Copy(c) => {
            assert_eq!(c.sources, ["a", "b"]);
            assert_eq!(c.dest, "/dst/");
            assert_eq!(c.from.as_deref(), Some("build"));
            assert_eq!(c.chown.as_deref(), Some("1:2"));
            assert_eq!(c.chmod.as_deref(), Some("0755"));
            assert!(c.link && c.parents);
            assert_eq!(c.exclude, ["*.md", "x"]);
            assert_eq!(c.source_contents.len(), 1);
            assert_eq!(c.source_contents[0].path, "EOF");
            assert_eq!(c.source_contents[0].data, "hello $X\n");
            assert!(!c.source_contents[0].expand);
        }
        other => panic!("{other:?}"),
    }
    match one(
        "ADD --keep-git-dir --checksum=sha256:abc --unpack=false --link=false https://x/y.tgz /d",
    ) {
        Instruction::Add(a) => {
            assert!(a.keep_git_dir && !a.link);
            assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
            assert_eq!(a.unpack, Some(false));
            assert_eq!(a.sources, ["https://x/y.tgz"]);
        }
        other => panic!("{other:?}"),
    }
    match one("COPY [\"<<EOF\", \"/d\"]") {
        Instruction::Copy(c) => {
            assert!(c.json);
            assert_eq!(c.sources, ["<<EOF"]);
            assert!(c.source_contents.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_label_arg_and_simple_instructions() {
    match one("ENV A=1 B=\"x y\" C=$A") {
        Instruction::Env(kv) => {
            let got: Vec<(&str, &str, bool)> = kv
                .iter()
                .map(|k| (k.key.as_str(), k.value.as_str(), k.equals))
                .collect();
            assert_eq!(
                got,
                [("A", "1", true), ("B", "\"x y\"", true), ("C", "$A", true)]
            );
        }
        other => panic!("{other:?}"),
    }
    match one("LABEL maintainer Jane Doe") {
        Instruction::Label(kv) => {
            assert_eq!(
                (kv[0].key.as_str(), kv[0].value.as_str(), kv[0].equals),
                ("maintainer", "Jane Doe", false)
            );
        }
        other => panic!("{other:?}"),
    }
    match one("ARG A B=2 C=") {
        Instruction::Arg(a) => {
            assert_eq!(a[0].default, None);
            assert_eq!(a[1].default.as_deref(), Some("2"));
            assert_eq!(a[2].default.as_deref(), Some(""));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(one("WORKDIR /a b"), Instruction::Workdir("/a b".into()));
    assert_eq!(one("USER app:app"), Instruction::User("app:app".into()));
    assert_eq!(
        one("EXPOSE 9090 80/tcp"),
        Instruction::Expose(vec!["80/tcp".into(), "9090".into()])
    );
    assert_eq!(
        one("VOLUME [\"/a\", \"/b\"]"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        one("VOLUME /a /b"),
        Instruction::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        one("STOPSIGNAL SIGKILL"),
        Instruction::StopSignal("SIGKILL".into())
    );
    assert_eq!(
        one("SHELL [\"/bin/bash\", \"-c\"]"),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
    assert_eq!(one("MAINTAINER me"), Instruction::Maintainer("me".into()));
}

#[test]
fn healthcheck_forms() {
    assert_eq!(
        one("HEALTHCHECK NONE"),
        Instruction::Healthcheck(Healthcheck::None)
    );
    match one("HEALTHCHECK --interval=5s --timeout=1m --start-period=0s --retries=3 CMD curl -f x")
    {
        Instruction::Healthcheck(Healthcheck::Check {
            command,
            interval,
            retries,
            ..
        }) => {
            assert_eq!(command, Command::Shell("curl -f x".into()));
            assert_eq!(interval.as_deref(), Some("5s"));
            assert_eq!(retries, Some(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn onbuild_trigger_reparses() {
    let df =
        parse(b"FROM a\nONBUILD COPY <<EOF /x\nhi\nEOF\nONBUILD RUN echo hi\n").expect("parses");
    let ins = &df.stages[0].instructions;
    let Instruction::Onbuild(o) = &ins[0].instruction else {
        panic!()
    };
    assert_eq!(o.expression, "COPY <<EOF /x\nhi\nEOF");
    let again = parse_instruction(&o.expression, '\\').expect("trigger re-parses");
    assert_eq!(&again.instruction, o.instruction.as_ref());
    let Instruction::Copy(c) = o.instruction.as_ref() else {
        panic!()
    };
    assert_eq!(c.source_contents[0].data, "hi\n");
    let Instruction::Onbuild(o) = &ins[1].instruction else {
        panic!()
    };
    assert_eq!(o.expression, "RUN echo hi");
    // Backtick escape for the trigger.
    let l = parse_instruction("RUN a `\n b", '`').expect("backtick");
    assert_eq!(l.original, "RUN a  b");
    assert_eq!(l.lines(), 1..=2);
}

#[test]
fn buildkit_error_messages_with_lines() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM a\nRUNN x\n",
            "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)",
        ),
        (
            "FROM a\ncopyy a b\n",
            "Dockerfile:2: unknown instruction: copyy (did you mean copy?)",
        ),
        (
            "FROM a\nFOOBAR x\n",
            "Dockerfile:2: unknown instruction: FOOBAR",
        ),
        ("RUN x\n", "Dockerfile:1: no build stage in current context"),
        (
            "FROM a b\n",
            "Dockerfile:1: FROM requires either one or three arguments",
        ),
        (
            "FROM a AS 1x\n",
            "Dockerfile:1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols",
        ),
        (
            "FROM a\nCOPY --form=x a b\n",
            "Dockerfile:2: unknown flag: form (did you mean from?)",
        ),
        (
            "FROM a\nCOPY --from=x --from=y a b\n",
            "Dockerfile:2: duplicate flag specified: from",
        ),
        (
            "FROM a\nCOPY --link=maybe a b\n",
            "Dockerfile:2: expecting boolean value for flag link, not: maybe",
        ),
        (
            "FROM a\nCOPY --chown a b\n",
            "Dockerfile:2: missing a value on flag: chown",
        ),
        (
            "FROM a\nCOPY a\n",
            "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        (
            "FROM a\nCOPY a <<EOF\nx\nEOF\n",
            "Dockerfile:2: COPY cannot accept a heredoc as a destination",
        ),
        (
            "FROM a\nWORKDIR\n",
            "Dockerfile:2: WORKDIR requires exactly one argument",
        ),
        (
            "FROM a\nEXPOSE\n",
            "Dockerfile:2: EXPOSE requires at least one argument",
        ),
        (
            "FROM a\nENV\n",
            "Dockerfile:2: ENV requires at least one argument",
        ),
        (
            "FROM a\nENV A\n",
            "Dockerfile:2: ENV must have two arguments",
        ),
        (
            "FROM a\nENV A=1 B\n",
            "Dockerfile:2: Syntax error - can't find = in \"B\". Must be of the form: name=value",
        ),
        (
            "FROM a\nARG =x\n",
            "Dockerfile:2: ARG names can not be blank",
        ),
        (
            "FROM a\nSHELL sh -c\n",
            "Dockerfile:2: SHELL requires the arguments to be in JSON form",
        ),
        (
            "FROM a\nONBUILD ONBUILD RUN x\n",
            "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "FROM a\nONBUILD FROM b\n",
            "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nONBUILD MAINTAINER b\n",
            "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nHEALTHCHECK NONE x\n",
            "Dockerfile:2: HEALTHCHECK NONE takes no arguments",
        ),
        (
            "FROM a\nHEALTHCHECK FOO x\n",
            "Dockerfile:2: Unknown type \"FOO\" in HEALTHCHECK (try CMD)",
        ),
        (
            "FROM a\nHEALTHCHECK CMD\n",
            "Dockerfile:2: Missing command after HEALTHCHECK CMD",
        ),
        (
            "FROM a\nHEALTHCHECK --retries=0 CMD x\n",
            "Dockerfile:2: --retries must be at least 1 (not 0)",
        ),
        (
            "FROM a\nHEALTHCHECK --interval=1us CMD x\n",
            "Dockerfile:2: Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "FROM a\nHEALTHCHECK --timeout=5 CMD x\n",
            "Dockerfile:2: time: missing unit in duration \"5\"",
        ),
        (
            "FROM a\nRUN --network=bridge x\n",
            "Dockerfile:2: unsupported network mode \"bridge\"",
        ),
        (
            "FROM a\nRUN --security=x y\n",
            "Dockerfile:2: unsupported security mode \"x\"",
        ),
        (
            "FROM a\nRUN <<EOF\nx\n",
            "Dockerfile:2: unterminated heredoc",
        ),
        (
            "FROM a\nVOLUME [\"\"]\n",
            "Dockerfile:2: VOLUME specified can not be an empty string",
        ),
        (
            "# escape=x\nFROM a\n",
            "Dockerfile:1: invalid escape token 'x' does not match ` or \\",
        ),
        (
            "# syntax=a\n# SYNTAX=b\nFROM a\n",
            "Dockerfile:2: only one syntax parser directive can be used",
        ),
        (
            "\n# just a comment\n",
            "Dockerfile:2: file with no instructions",
        ),
        (
            "FROM a\nCMD [\"a\", {}]\n",
            "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            "FROM a\nRUN a \\\n  b \\\n  c [\"x\"\nCOPY a\n",
            "Dockerfile:5: COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(&err(src), want, "{src:?}");
    }
    // Syntax errors anywhere win over typed errors earlier in the file, as in BuildKit.
    assert_eq!(
        err("FROM a\nRUNN x\nRUN <<EOF\nx\n"),
        "Dockerfile:3: unterminated heredoc"
    );
    let e = parse(b"FROM a\nRUN a \\\n b\nUSER\n").unwrap_err();
    assert_eq!(e.line(), Some(4));
    let e = e.with_file("build/Dockerfile.dev");
    assert_eq!(
        e.to_string(),
        "build/Dockerfile.dev:4: USER requires exactly one argument"
    );
    assert!(matches!(e, Error::Syntax { end_line: 4, .. }));
}

#[test]
fn run_mount_csv_after_expansion() {
    let m = kiln_parser::RunMount::parse(
        "type=cache,id=go,target=/root/.cache,sharing=locked,uid=1000,mode=0700",
    )
    .expect("valid");
    assert_eq!(m.id.as_deref(), Some("go"));
    assert_eq!(m.sharing, Some(kiln_parser::CacheSharing::Locked));
    assert_eq!((m.uid, m.mode), (Some(1000), Some(0o700)));
    let e = kiln_parser::RunMount::parse("type=tmpfs,uid=1").unwrap_err();
    assert_eq!(e.to_string(), "uid not allowed for \"tmpfs\" type mounts");
    let e = kiln_parser::RunMount::parse("type=cache,size=1g").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unexpected key 'size' for mount type 'cache'"
    );
}

/// The exec form is read the way Go's `encoding/json` reads it (BuildKit `parseJSON`): a lone
/// surrogate escape is U+FFFD, an array nested within Go's depth limit of 10,000 is a valid
/// array with a non-string element (an error, not the shell form), a number out of `float64`
/// range or trailing text makes it the shell form.
#[test]
fn exec_form_json_like_go() {
    assert_eq!(
        one("CMD [\"\\ud800x\", \"\\ud83d\\ude00\"]"),
        Instruction::Cmd(Command::Exec(vec!["\u{fffd}x".into(), "😀".into()]))
    );
    let nested = format!("CMD [{}{}]", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        parse_instruction(&nested, '\\').unwrap_err().message(),
        "when using JSON array syntax, arrays must be comprised of strings only"
    );
    for shell in ["CMD [\"a\", 1e400]", "CMD [\"a\"] x", "CMD [\"a\",]"] {
        assert_eq!(
            one(shell),
            Instruction::Cmd(Command::Shell(shell[4..].into())),
            "{shell}"
        );
    }
    assert_eq!(
        one("ENTRYPOINT [ \"a\" ,\t\"b\" ] "),
        Instruction::Entrypoint(Command::Exec(vec!["a".into(), "b".into()]))
    );
}
