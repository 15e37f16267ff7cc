//! Issue 14: a step that misses the cache says why, compared with the last build of the same
//! Dockerfile step in this state directory: the json events carry it as `reason` of
//! `step_started`, and `--explain` (or `KILN_EXPLAIN=1`) shows it in plain output.

use crate::common;

use common::{busybox_context, kiln, not_root, tempdir, text};

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /busybox\nARG V=1\nCOPY app /app\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"echo $V > /v\"]\n";

/// The `step_started` events of a json build: (instruction, reason).
fn build_json(
    state: &tempfile::TempDir,
    ctx: &std::path::Path,
    args: &[&str],
) -> Vec<(String, Option<String>)> {
    let o = kiln(state)
        .args(["build", "--progress=json"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (out, err) = text(&o);
    assert!(o.status.success(), "build failed: {err}");
    format!("{out}{err}")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "step_started")
        .map(|v| {
            (
                v["instruction"].as_str().unwrap_or_default().to_string(),
                v["reason"].as_str().map(String::from),
            )
        })
        .collect()
}

fn reason_of(events: &[(String, Option<String>)], prefix: &str) -> Option<String> {
    events
        .iter()
        .find(|(i, _)| i.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix} in {events:?}"))
        .1
        .clone()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let mut s = String::new();
    for b in sha2::Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[test]
fn a_miss_names_the_changed_file_the_build_arg_or_the_parent() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(DOCKERFILE) else {
        return;
    };
    common::write_files(
        ctx.path(),
        &[("app/a.txt", "one\n"), ("app/sub/b.txt", "two\n")],
    );
    let state = tempdir();
    let first = build_json(&state, ctx.path(), &[]);
    assert_eq!(
        reason_of(&first, "COPY app").as_deref(),
        Some("no earlier build of this step")
    );

    // Nothing changed: no step runs, none has a reason.
    let warm = build_json(&state, ctx.path(), &[]);
    assert!(warm.iter().all(|(_, r)| r.is_none()), "{warm:?}");

    // One file of the COPY'd directory: its path and both digests; the RUN's parent missed.
    std::fs::write(ctx.path().join("app/sub/b.txt"), "changed\n").expect("write");
    let edit = build_json(&state, ctx.path(), &[]);
    assert_eq!(reason_of(&edit, "COPY busybox"), None, "{edit:?}");
    let why = reason_of(&edit, "COPY app").expect("a reason for the COPY");
    assert_eq!(
        why,
        format!(
            "file /app/sub/b.txt changed: content sha256:{} -> sha256:{}",
            sha256_hex(b"two\n"),
            sha256_hex(b"changed\n")
        )
    );
    assert_eq!(
        reason_of(&edit, "RUN").as_deref(),
        Some("the parent step missed the cache: `COPY app /app` (line 4)")
    );

    // A build arg.
    let arg = build_json(&state, ctx.path(), &["--build-arg", "V=2"]);
    assert_eq!(reason_of(&arg, "COPY app"), None, "{arg:?}");
    assert_eq!(
        reason_of(&arg, "RUN").as_deref(),
        Some("build arg or env V changed: \"1\" -> \"2\"")
    );

    // Shown by plain output with --explain and KILN_EXPLAIN=1, not without.
    std::fs::write(ctx.path().join("app/a.txt"), "three\n").expect("write");
    let plain = |explain: &[&str], env: Option<&str>| {
        let mut cmd = kiln(&state);
        if let Some(v) = env {
            cmd.env("KILN_EXPLAIN", v);
        } else {
            cmd.env_remove("KILN_EXPLAIN");
        }
        let o = cmd
            .args(["build", "--progress=plain"])
            .args(explain)
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).1
    };
    let shown = plain(&["--explain"], None);
    assert!(
        shown.contains("cache miss: file /app/a.txt changed: content sha256:"),
        "{shown}"
    );
    std::fs::write(ctx.path().join("app/a.txt"), "four\n").expect("write");
    let env = plain(&[], Some("1"));
    assert!(env.contains("cache miss: file /app/a.txt changed"), "{env}");
    std::fs::write(ctx.path().join("app/a.txt"), "five\n").expect("write");
    let hidden = plain(&[], None);
    assert!(!hidden.contains("cache miss"), "{hidden}");
}
