//! Containment of a RUN step: what a hostile Dockerfile or base image may try from inside the
//! container (32-bit syscalls, device nodes, swapped mount-stub parents, symlink chains) must
//! not reach the host.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_executor::ProcessSpec;
use support::{Fixture, require_env};

/// Compiles `tests/fixtures/<name>.c` statically into `out`; `None` (skip) without gcc or a
/// static libc, a panic under CI.
fn compile_static(name: &str, out: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let binary = out.join(name);
    let result = Command::new("gcc")
        .args(["-static", "-no-pie", "-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .output();
    match result {
        Ok(o) if o.status.success() => Some(binary),
        other => {
            let reason = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot run under CI: gcc -static {}: {reason}",
                source.display()
            );
            eprintln!("skipped: needs gcc and a static libc (libc6-dev): {reason}");
            None
        }
    }
}

#[test]
fn seccomp_covers_the_i386_and_x32_abis() {
    require_env!();
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let f = Fixture::new();
    let Some(binary) = compile_static("syscalls32", f.dir.path()) else {
        return;
    };
    fs::copy(&binary, f.lower().join("bin/syscalls32")).expect("copy probe");
    let out = f.run(
        &ProcessSpec {
            args: vec!["/bin/syscalls32".into()],
            ..ProcessSpec::default()
        },
        &[],
    );
    assert_eq!(
        out.ok(),
        "64 keyctl: EPERM\n64 unshare: EPERM\n64 mount: EPERM\n64 socket vsock: EPERM\n\
         64 getpid: ok\nx32 keyctl: EPERM\n32 getpid: ok\n32 keyctl: EPERM\n\
         32 socket vsock: EPERM\n32 unshare: EPERM\n32 mount: EPERM\n"
    );
    // Ordinary commands still work under the allow-list.
    let out = f.sh(
        "mkdir -p /tmp/d && echo hi > /tmp/d/f && ln -s f /tmp/d/l && cat /tmp/d/l && \
         ls /tmp/d | sort | tr '\\n' ' ' && (sleep 0 &) && wait && id -u && \
         chmod 600 /tmp/d/f && stat -c %a /tmp/d/f && date +%Y >/dev/null && echo done",
        ProcessSpec::default(),
        &[],
    );
    assert_eq!(out.ok(), "hi\nf l 0\n600\ndone\n");
}
