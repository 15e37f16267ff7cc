//! The one place tests decide whether they can run here.
//!
//! Every `require_*` function answers "may this test go on?": `true` when the requirement is
//! met; otherwise it prints `skipped: <test>: <why>` and returns `false`, or panics when the `CI`
//! environment variable is set, because CI installs everything and must run every test.
//!
//! ```
//! if !kiln_testkit::require_tool("my_test", "sh", "dash") {
//!     return;
//! }
//! ```

use std::path::PathBuf;

/// Whether the effective user is root (in the current user namespace).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether CI is running us (the `CI` environment variable is set): nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Records that `test` cannot run because of `why`: prints `skipped: ...` and returns `false`,
/// or panics under CI.
pub fn skip(test: &str, why: &str) -> bool {
    assert!(!under_ci(), "{test}: required under CI: {why}");
    eprintln!("skipped: {test}: {why}");
    false
}

/// `true` when the test runs as root (namespaces, mounts); else see [`skip`].
pub fn require_root(test: &str) -> bool {
    is_root() || skip(test, "needs root (mounts, namespaces)")
}

/// `true` when the test runs as an ordinary user; else see [`skip`].
pub fn require_non_root(test: &str) -> bool {
    !is_root() || skip(test, "needs a non-root user")
}

/// The path of `tool` on `PATH`, if any.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

/// `true` when `tool` is on `PATH`; else see [`skip`], naming the Debian `package` that has it.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    find_tool(tool).is_some() || skip(test, &format!("needs `{tool}` (apt-get install {package})"))
}

/// Runs `argv[0]` with the rest as arguments and returns its stdout; panics, showing the
/// status, stdout and stderr, when it cannot start or exits unsuccessfully.
pub fn run_ok(argv: &[&str]) -> String {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{argv:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_a_made_up_tool() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("kiln-no-such-tool-xyz").is_none());
    }

    #[test]
    fn run_ok_returns_stdout_and_panics_on_failure() {
        assert_eq!(run_ok(&["sh", "-c", "echo hi"]), "hi\n");
        let failed = std::panic::catch_unwind(|| run_ok(&["sh", "-c", "echo oops >&2; exit 3"]));
        let msg = failed.expect_err("exit 3 must panic");
        let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("oops") && text.contains("exit status: 3"),
            "{text}"
        );
    }

    #[test]
    fn root_checks_agree_with_the_euid() {
        assert_eq!(is_root(), rustix::process::geteuid().as_raw() == 0);
    }
}
