//! The error report of a failed step, in BuildKit's shape: the step's last output lines between
//! `------` rules, then the Dockerfile excerpt around the failing instruction with line numbers
//! and `>>>` on its lines, then the error (which names the command and its exit code).

use std::fmt::Write as _;

use super::StepInfo;

/// The Dockerfile text, kept by the CLI so errors can quote it.
#[derive(Debug, Clone)]
pub(crate) struct DockerfileSource {
    /// Name shown above the excerpt (`Dockerfile`, or the `-f` file name).
    pub(crate) name: String,
    /// The whole text.
    pub(crate) text: String,
}

/// Lines of output shown in a plain report (the tty report shows them all).
pub(crate) const REPORT_LOG_LINES: usize = 10;

/// The last line of an instruction starting at `start` (1-based): continuation lines end in `\`.
fn instruction_end(lines: &[&str], start: usize) -> usize {
    let mut end = start;
    while end <= lines.len() && lines[end - 1].trim_end().ends_with('\\') && end < lines.len() {
        end += 1;
    }
    end
}

/// The excerpt of `source` around the instruction at 1-based `line`, exactly as BuildKit
/// prints it (`solver/errdefs/source.go`): four lines of context for a one-line instruction,
/// two for a longer one.
pub(crate) fn excerpt(source: &DockerfileSource, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.text.split('\n').collect();
    if line < 1 || line > lines.len() {
        return None;
    }
    excerpt_lines(source, line, instruction_end(&lines, line), None)
}

/// The excerpt around lines `first..=last` (1-based), all of them marked. With a `column`
/// (1-based, in characters, on line `first`), the header reads `NAME:LINE:COL` and a caret
/// line under line `first` points at it. Unlike BuildKit, no blank line after a trailing
/// newline.
pub(crate) fn excerpt_lines(
    source: &DockerfileSource,
    first: usize,
    last: usize,
    column: Option<usize>,
) -> Option<String> {
    kiln_checks::Excerpt {
        name: &source.name,
        text: &source.text,
        marked: &[(first, last)],
        column,
        trim_blank_tail: true,
    }
    .render()
}

/// The column (1-based, in characters, on its first line) a build error points at, when the
/// error is a syntax or plan error whose offending token is known.
fn error_column(error: &kiln::Error, source: &DockerfileSource, line: usize) -> Option<usize> {
    match error {
        kiln::Error::Parse(e) => e.column(),
        kiln::Error::Plan { message, .. } => {
            let text = source.text.split('\n').nth(line.checked_sub(1)?)?;
            kiln_parser::mount_error_span(text.strip_suffix('\r').unwrap_or(text), message)
                .map(|s| s.column)
        }
        _ => None,
    }
}

/// The full report for a failed step. `all_logs` prints every kept line instead of the last
/// [`REPORT_LOG_LINES`].
pub(crate) fn step_report(
    step: &StepInfo,
    error: &str,
    source: Option<&DockerfileSource>,
    all_logs: bool,
    color: bool,
) -> String {
    let mut out = String::from("------\n");
    let _ = writeln!(out, " > {} {}:", step.label(), step.instruction);
    let skip = if all_logs {
        0
    } else {
        step.logs.len().saturating_sub(REPORT_LOG_LINES)
    };
    if step.dropped_logs + skip > 0 {
        let _ = writeln!(
            out,
            "[{} earlier lines not shown]",
            step.dropped_logs + skip
        );
    }
    for (at, line) in step.logs.iter().skip(skip) {
        let _ = writeln!(out, "{:.3} {line}", at.as_secs_f64());
    }
    out.push_str("------\n");
    if let Some(ex) = source.and_then(|s| excerpt(s, step.line)) {
        out.push_str(&ex);
    }
    // The solver's message may end with the output's last lines; they are shown above already.
    let error = if step.logs.is_empty() {
        error
    } else {
        error.lines().next().unwrap_or(error)
    };
    out.push_str(&error_line(error, color));
    out
}

/// The report of an error no step reported (a parse error, a missing stage, a registry
/// error): the excerpt when the error names Dockerfile lines, then the error.
pub(crate) fn build_error_report(
    error: &kiln::Error,
    source: Option<&DockerfileSource>,
    color: bool,
) -> String {
    let mut out = String::new();
    if let (Some((first, last)), Some(source)) = (error.dockerfile_lines(), source)
        && let Some(ex) = excerpt_lines(source, first, last, error_column(error, source, first))
    {
        out.push_str(&ex);
    }
    out.push_str(&error_line(&error_text(error), color));
    out
}

/// An error as the user reads it: the message and each cause once, without the meaningless
/// `Dockerfile:0: ` of an error tied to no line.
pub(crate) fn error_text(error: &kiln::Error) -> String {
    let text = error.report();
    match text.strip_prefix("Dockerfile:0: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// `error: ...`, red on a color terminal, and a `hint: ...` line when the error is one the user
/// can fix.
pub(crate) fn error_line(error: &str, color: bool) -> String {
    // An error tied to no line carries a meaningless `Dockerfile:0: ` prefix.
    let error = error.strip_prefix("Dockerfile:0: ").unwrap_or(error);
    let mut out = if color {
        format!("\x1b[31merror:\x1b[0m {error}\n")
    } else {
        format!("error: {error}\n")
    };
    if let Some(h) = hint(error, rustix::process::geteuid().is_root()) {
        let _ = writeln!(out, "hint: {h}");
    }
    out
}

/// What to do about a failure the user can fix (registry access, permissions, names).
fn hint(error: &str, root: bool) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let has = |s: &str| e.contains(s);
    // A rootless build that could not start says itself what to do.
    if !root
        && !has("cannot build rootless")
        && (has("operation not permitted") || has("permission denied") || has("os error 1)"))
    {
        return Some(
            "kiln mounts filesystems and runs steps in namespaces: run it as root (e.g. with sudo)",
        );
    }
    if has("cannot reach registry") {
        return Some(
            "check the registry address and that it is up; `kiln images` lists the images kiln already has",
        );
    }
    if has("unauthorized") || has("http 401") || has("http 403") || has("denied:") {
        return Some(
            "log in with `docker login REGISTRY` (kiln reads ~/.docker/config.json) and check the image name",
        );
    }
    if has("image pull") && (has("not found") || has("http 404") || has("does not exist")) {
        return Some(
            "check the image name and tag; `kiln images` lists the images kiln already has",
        );
    }
    if has("target stage") && has("could not be found") {
        return Some("`--target` names a stage declared with `FROM ... AS NAME`");
    }
    if has("no space left on device") {
        return Some("free disk space in the state directory (`--root`), e.g. with `kiln prune`");
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::progress::StepStatus;
    use crate::cli::progress::testing::DOCKERFILE;

    fn src(text: &str) -> DockerfileSource {
        DockerfileSource {
            name: "Dockerfile".into(),
            text: text.into(),
        }
    }

    #[test]
    fn excerpt_marks_one_line_with_four_lines_of_context() {
        let text = "L1\nL2\nL3\nL4\nL5\nL6\nL7\nL8\nL9\n";
        assert_eq!(
            excerpt(&src(text), 5).unwrap(),
            "Dockerfile:5\n--------------------\n   3 |     L3\n   4 |     L4\n   5 | >>> L5\n   6 |     L6\n   7 |     L7\n--------------------\n"
        );
    }

    #[test]
    fn excerpt_at_the_top_takes_context_below() {
        assert_eq!(
            excerpt(&src("FROM a\nRUN x\nRUN y\n"), 1).unwrap(),
            "Dockerfile:1\n--------------------\n   1 | >>> FROM a\n   2 |     RUN x\n   3 |     RUN y\n--------------------\n"
        );
    }

    #[test]
    fn excerpt_marks_every_continuation_line() {
        assert_eq!(
            excerpt(&src(DOCKERFILE), 3).unwrap(),
            "Dockerfile:3\n--------------------\n   2 |     COPY hello.txt /\n   3 | >>> RUN echo hi && \\\n   4 | >>>     false\n   5 |     CMD [\"/hello\"]\n--------------------\n"
        );
    }

    #[test]
    fn parse_errors_show_the_excerpt() {
        let e = kiln::Error::Parse(kiln_parser::parse(b"FROM a\nRUNN x\n").unwrap_err());
        assert_eq!(
            build_error_report(&e, Some(&src("FROM a\nRUNN x\n")), false),
            "Dockerfile:2:1\n--------------------\n   1 |     FROM a\n   2 | >>> RUNN x\n     |     ^\n--------------------\nerror: Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)\n"
        );
        let e = kiln::Error::Plan {
            line: 0,
            message: "registry `r` refused".into(),
        };
        assert_eq!(
            build_error_report(&e, Some(&src("FROM a\n")), false),
            "error: registry `r` refused\n"
        );
    }

    #[test]
    fn the_caret_points_at_the_column_of_the_first_line() {
        let text = "FROM a\n\t COPY --nope --chown=1 \\\n  a /b\nRUN x\n";
        let e = kiln::Error::Parse(kiln_parser::parse(text.as_bytes()).unwrap_err());
        assert_eq!(e.to_string(), "Dockerfile:2: unknown flag: nope");
        assert_eq!(
            build_error_report(&e, Some(&src(text)), false),
            "Dockerfile:2:8\n--------------------\n   1 |     FROM a\n   2 | >>> \t COPY --nope --chown=1 \\\n     |     \t      ^\n   3 | >>>   a /b\n   4 |     RUN x\n--------------------\nerror: Dockerfile:2: unknown flag: nope\n"
        );
        // A plan error of the solver (a `--mount` checked after expansion) is located too.
        let e = kiln::Error::Plan {
            line: 2,
            message: "unexpected key 'colour' in 'colour=red'".into(),
        };
        let text = "FROM a\nRUN --mount=type=cache,colour=red make\n";
        let report = build_error_report(&e, Some(&src(text)), false);
        assert!(
            report.starts_with("Dockerfile:2:24\n--------------------\n   1 |     FROM a\n   2 | >>> RUN --mount=type=cache,colour=red make\n     |                            ^\n"),
            "{report}"
        );
        // A column past the end of the line (the source changed) shows no caret.
        assert_eq!(
            excerpt_lines(&src("FROM a\n"), 1, 1, Some(9)).unwrap(),
            "Dockerfile:1\n--------------------\n   1 | >>> FROM a\n--------------------\n"
        );
    }

    #[test]
    fn hints_for_what_users_can_fix() {
        assert!(
            hint(
                "bind mount `/x`: Operation not permitted (os error 1)",
                false
            )
            .unwrap()
            .contains("run it as root")
        );
        assert_eq!(
            hint(
                "bind mount `/x`: Operation not permitted (os error 1)",
                true
            ),
            None
        );
        assert_eq!(
            hint(
                "cannot build rootless: creating a user namespace failed (...), or run as root: \
                 Operation not permitted (os error 1)",
                false
            ),
            None
        );
        assert!(
            hint(
                "image pull r/x:1: cannot reach registry r: io: refused",
                true
            )
            .unwrap()
            .contains("registry address")
        );
        assert!(
            hint(
                "image pull r/x:1: unauthorized: authentication required",
                true
            )
            .unwrap()
            .contains("docker login")
        );
        assert!(
            hint(
                "image pull r/x:1: not found: manifest `1` does not exist",
                true
            )
            .unwrap()
            .contains("image name and tag")
        );
        assert!(
            hint("target stage \"foo\" could not be found", true)
                .unwrap()
                .contains("FROM ... AS NAME")
        );
        assert_eq!(hint("exit code: 1", false), None);
        assert_eq!(
            error_line(
                "Dockerfile:0: target stage \"foo\" could not be found",
                false
            ),
            "error: target stage \"foo\" could not be found\nhint: `--target` names a stage declared with `FROM ... AS NAME`\n"
        );
    }

    #[test]
    fn excerpt_out_of_range_is_none() {
        assert!(excerpt(&src("FROM a\n"), 7).is_none());
        assert!(excerpt(&src("FROM a\n"), 0).is_none());
    }

    #[test]
    fn report_shows_last_lines_excerpt_and_error() {
        let step = StepInfo {
            index: 3,
            total: 3,
            stage: "build".into(),
            instruction: "RUN echo hi && false".into(),
            line: 3,
            started: Duration::ZERO,
            status: StepStatus::Failed("x".into()),
            logs: (1..=12)
                .map(|i| (Duration::from_millis(i * 10), format!("out {i}")))
                .collect(),
            dropped_logs: 0,
            reason: None,
        };
        let r = step_report(
            &step,
            "process \"/bin/sh -c echo hi && false\" did not complete successfully: exit code: 1",
            Some(&src(DOCKERFILE)),
            false,
            false,
        );
        assert_eq!(
            r,
            "------\n > [build 3/3] RUN echo hi && false:\n[2 earlier lines not shown]\n0.030 out 3\n0.040 out 4\n0.050 out 5\n0.060 out 6\n0.070 out 7\n0.080 out 8\n0.090 out 9\n0.100 out 10\n0.110 out 11\n0.120 out 12\n------\nDockerfile:3\n--------------------\n   2 |     COPY hello.txt /\n   3 | >>> RUN echo hi && \\\n   4 | >>>     false\n   5 |     CMD [\"/hello\"]\n--------------------\nerror: process \"/bin/sh -c echo hi && false\" did not complete successfully: exit code: 1\n"
        );
        let with_tail = step_report(&step, "exit code: 1\nout 11\nout 12", None, false, false);
        assert!(
            with_tail.ends_with("------\nerror: exit code: 1\n"),
            "{with_tail}"
        );
        let full = step_report(&step, "e", None, true, true);
        assert!(full.contains("0.010 out 1\n"), "{full}");
        assert!(full.ends_with("\x1b[31merror:\x1b[0m e\n"), "{full}");
    }
}
