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

mod registry;

pub use registry::Registry;

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

/// The loopback registry `../shared/registry-up.sh` serves the base images on (busybox, and
/// debian:bookworm or multi-arch busybox with its flags).
pub const SHARED_REGISTRY: &str = "127.0.0.1:5000";

/// `true` when [`SHARED_REGISTRY`] serves `busybox:latest`, after starting it with
/// `../shared/registry-up.sh` (beside the checkout; once per process) when it did not answer;
/// else see [`skip`].
pub fn require_shared_registry(test: &str) -> bool {
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let up = *UP.get_or_init(|| {
        let answers = || {
            std::process::Command::new("curl")
                .args(["-fsS", "--max-time", "60", "-o", "/dev/null", "-H"])
                .arg(
                    "Accept: application/vnd.oci.image.index.v1+json,\
                     application/vnd.oci.image.manifest.v1+json,\
                     application/vnd.docker.distribution.manifest.v2+json",
                )
                .arg(format!(
                    "http://{SHARED_REGISTRY}/v2/busybox/manifests/latest"
                ))
                .status()
                .is_ok_and(|s| s.success())
        };
        if answers() {
            return true;
        }
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/registry-up.sh");
        if script.exists() {
            let _ = std::process::Command::new("timeout")
                .arg("300")
                .arg("bash")
                .arg(&script)
                .status();
        }
        answers()
    });
    up || skip(
        test,
        &format!("needs the registry of ../shared/registry-up.sh on {SHARED_REGISTRY}"),
    )
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

/// `len` bytes shaped like a real layer for compression tests and benches: the first half
/// pseudo-random (xorshift32 from `seed`, incompressible), the second half repeated text.
/// The same `len` and `seed` always give the same bytes.
pub fn layer_like_bytes(len: usize, seed: u32) -> Vec<u8> {
    let text = b"a line of compressible build output\n";
    let mut x = seed.max(1);
    (0..len)
        .map(|i| {
            if i < len / 2 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            } else {
                text[i % text.len()]
            }
        })
        .collect()
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
