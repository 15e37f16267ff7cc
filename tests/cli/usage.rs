//! The `kiln` command's surface without building anything: --help, --version, completions, and
//! every way to call `kiln build` wrongly (exit status 2, one message style), plus errors that
//! stop a build before it starts (exit status 1).

use crate::common;

use common::{kiln, tempdir, text, write_files};

#[test]
fn version_prints_the_crate_version() {
    let state = tempdir();
    let out = kiln(&state).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        text(&out).0,
        format!("kiln {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_shows_examples_and_every_build_flag() {
    let state = tempdir();
    let out = kiln(&state).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out).0;
    assert!(
        help.contains("Examples:\n  kiln build -t hello:latest examples/hello"),
        "{help}"
    );
    let out = kiln(&state).args(["build", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out).0;
    for flag in [
        "-t, --tag",
        "-f, --file",
        "--build-arg",
        "--target",
        "--no-cache",
        "--no-cache-filter",
        "--pull",
        "--label",
        "--platform",
        "--secret",
        "--ssh",
        "--network",
        "-o, --output",
        "--push",
        "--iidfile",
        "--metadata-file",
        "--cache-from",
        "--cache-to",
        "--progress",
        "-q, --quiet",
        "--jobs",
        "--root",
    ] {
        assert!(help.contains(flag), "`{flag}` missing from:\n{help}");
    }
    assert!(
        help.contains("tar -C ctx -c . | kiln build -t app -"),
        "{help}"
    );
    assert!(
        help.contains("Exit status: 0 built, 1 the build failed, 2 the command line is wrong."),
        "{help}"
    );
}

#[test]
fn completions_for_three_shells() {
    let state = tempdir();
    for (shell, marker) in [
        ("bash", "_kiln()"),
        ("zsh", "#compdef kiln"),
        ("fish", "complete -c kiln"),
    ] {
        let out = kiln(&state).args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out).0;
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("no-cache-filter"),
            "{shell} completes build flags"
        );
    }
    let out = kiln(&state).args(["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `kiln build ARGS` in a context with a valid Dockerfile and expects exit status 2 with
/// `message` in stderr.
fn usage_error(args: &[&str], message: &str) {
    let state = tempdir();
    let ctx = tempdir();
    write_files(ctx.path(), &[("Dockerfile", "FROM scratch\n")]);
    let out = kiln(&state)
        .arg("build")
        .args(args)
        .arg(ctx.path())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(message),
        "{args:?}: expected `{message}` in:\n{stderr}"
    );
    assert_eq!(stdout, "");
}

/// Multi-platform builds (issue 16) took away "not supported yet"; a platform containerd cannot
/// parse is still a usage error, alone or in a list, in containerd's words.
#[test]
fn malformed_platform_is_a_clear_usage_error() {
    usage_error(
        &["--platform", "foo"],
        "invalid platform `foo`: \"foo\": unknown operating system or architecture",
    );
    usage_error(
        &["--platform", "linux/amd64,linux/"],
        "invalid platform `linux/`: \"\" is an invalid component of \"linux/\"",
    );
}

#[test]
fn malformed_outputs_are_usage_errors() {
    usage_error(&["-o", "type=oci"], "`type=oci` needs `dest=`");
    usage_error(&["--output", "type=zip,dest=x"], "unknown type `zip`");
    usage_error(
        &["--output", "type=oci,dest=x,bogus=1"],
        "unknown key `bogus`",
    );
    usage_error(
        &["--output", "type=docker,dest=x,compression=lz4"],
        "unknown compression `lz4`",
    );
    usage_error(&["--output", "type=local,dest=-"], "use `type=tar,dest=-`");
}

#[test]
fn malformed_specs_are_usage_errors() {
    usage_error(
        &["--secret", "id=a,src=x,env=Y"],
        "give either `src=` or `env=`",
    );
    usage_error(&["--secret", "id=a,mode=0400"], "unknown key `mode`");
    usage_error(
        &["--ssh", "=x"],
        "is not of the form `default` or `ID=PATH[,PATH]`",
    );
    usage_error(&["--cache-from", "type=nope"], "unknown cache type `nope`");
    usage_error(
        &["--cache-to", "type=registry"],
        "`type=registry` needs `ref=`",
    );
    usage_error(&["--network", "bridge"], "unknown network mode `bridge`");
    usage_error(
        &["--progress", "fancy"],
        "invalid value 'fancy' for '--progress <FORMAT>'",
    );
    usage_error(&["--jobs", "0"], "invalid value '0' for '--jobs <N>'");
    usage_error(
        &["--label", "novalue"],
        "`novalue` is not of the form KEY=VALUE",
    );
    usage_error(&["--build-arg", "=x"], "the argument name is empty");
    usage_error(&["--bogus-flag"], "unexpected argument '--bogus-flag'");
}

#[test]
fn inconsistent_combinations_are_usage_errors() {
    usage_error(&["--push"], "`--push` needs at least one `-t NAME`");
    usage_error(
        &["-q", "-o", "type=tar,dest=-"],
        "cannot be combined with an output to stdout",
    );
    usage_error(
        &["-o", "type=tar,dest=-", "-o", "-"],
        "only one output can go to stdout",
    );
}

#[test]
fn stdin_cannot_hold_both_context_and_dockerfile() {
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-f", "-", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("`-f -` and a `-` context cannot both read stdin"),
        "{}",
        text(&out).1
    );
}

#[test]
fn missing_context_and_remote_contexts() {
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "/nonexistent/ctx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("build context `/nonexistent/ctx` is not a directory"),
        "{}",
        text(&out).1
    );
    let out = kiln(&state)
        .args(["build", "https://github.com/x/y.git"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("remote build contexts"),
        "{}",
        text(&out).1
    );
    let out = kiln(&state).arg("build").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "PATH is required");
}

#[test]
fn a_missing_dockerfile_fails_with_its_path() {
    let state = tempdir();
    let ctx = tempdir();
    let out = kiln(&state).arg("build").arg(ctx.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out).1;
    let expected = format!(
        "error: cannot read Dockerfile `{}/Dockerfile`",
        ctx.path().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    let out = kiln(&state)
        .args(["build", "-f", "/nonexistent/Dockerfile.dev"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("cannot read Dockerfile `/nonexistent/Dockerfile.dev`"),
        "{}",
        text(&out).1
    );
}

#[test]
fn a_syntax_error_shows_the_excerpt_and_the_line() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[(
            "Dockerfile",
            "FROM scratch\nCOPY a /\nRUNN make\nCMD [\"/a\"]\n",
        )],
    );
    for progress in ["plain", "tty", "quiet"] {
        let out = kiln(&state)
            .args(["build", "--progress", progress])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{progress}");
        let stderr = text(&out).1;
        assert!(
            stderr.ends_with(
                "Dockerfile:3:1\n--------------------\n   1 |     FROM scratch\n   2 |     COPY a /\n   3 | >>> RUNN make\n     |     ^\n   4 |     CMD [\"/a\"]\n--------------------\n\
                 error: Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)\n"
            ),
            "{progress}: {stderr}"
        );
    }
    // From stdin, the same report.
    let out = kiln(&state)
        .args(["build", "--progress=plain", "-f", "-"])
        .arg(ctx.path())
        .stdin(std::fs::File::open(ctx.path().join("Dockerfile")).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("   3 | >>> RUNN make\n"),
        "{}",
        text(&out).1
    );
    // As JSON, one error object.
    let out = kiln(&state)
        .args(["build", "--progress=json"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out).1,
        "{\"message\":\"Dockerfile:3: unknown instruction: RUNN (did you mean RUN?)\",\"type\":\"error\"}\n"
    );
}

#[test]
fn a_syntax_error_points_a_caret_at_its_column() {
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[(
            "Dockerfile",
            "FROM scratch\n  COPY --chmod=644 --nope a /\nCMD [\"/a\"]\n",
        )],
    );
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out).1;
    assert!(
        stderr.ends_with(
            "Dockerfile:2:20\n--------------------\n   1 |     FROM scratch\n   2 | >>>   COPY --chmod=644 --nope a /\n     |                        ^\n   3 |     CMD [\"/a\"]\n--------------------\n\
             error: Dockerfile:2: unknown flag: nope\n"
        ),
        "{stderr}"
    );
}
