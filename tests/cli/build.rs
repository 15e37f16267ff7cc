//! `kiln build` end to end through the binary: every flag, the plain and json progress formats
//! (event order, cache markers, "Using cache" on a rebuild), outputs, stdin contexts and the
//! error report of a failing RUN. Images are `FROM scratch` (plus the static busybox from the
//! host for RUN steps), so nothing here needs the network.

use crate::common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::oci::{oci_image, tar_entries};
use common::{busybox_context, hello_context, kiln, tempdir, text, write_files};
use serde_json::Value;

/// Builds `ctx` with `args` and the state in `state`.
fn build(state: &tempfile::TempDir, args: &[&str], ctx: &std::path::Path) -> Output {
    kiln(state)
        .arg("build")
        .args(args)
        .arg(ctx)
        .output()
        .expect("run kiln")
}

fn ok(out: &Output) -> (String, String) {
    let (o, e) = text(out);
    assert!(
        out.status.success(),
        "kiln failed ({:?}):\n{e}",
        out.status.code()
    );
    (o, e)
}

/// RUN steps need root (namespaces, mounts): true when this test is skipped.
fn need_root() -> bool {
    common::not_root()
}

#[test]
fn plain_progress_and_using_cache_on_the_second_build() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let (stdout, first) = ok(&build(
        &state,
        &["--progress=plain", "-t", "hello:latest"],
        &hello_context(),
    ));
    assert_eq!(stdout, "");
    let steps: Vec<&str> = first.lines().filter(|l| l.starts_with("Step ")).collect();
    assert!(!steps.is_empty(), "{first}");
    let total = steps.len();
    for (i, l) in steps.iter().enumerate() {
        assert!(
            l.starts_with(&format!("Step {}/{total} : ", i + 1)),
            "{l}\n{first}"
        );
    }
    assert!(first.contains(" : COPY hello.txt /hello.txt\n"), "{first}");
    assert!(
        first.contains("Successfully tagged hello:latest\n"),
        "{first}"
    );
    assert!(
        first.lines().any(|l| l.starts_with("Build finished in ")),
        "{first}"
    );
    assert!(
        first.contains(" ---> Done "),
        "the first build runs the COPY steps:\n{first}"
    );

    let (_, second) = ok(&build(
        &state,
        &["--progress=plain", "-t", "hello:latest"],
        &hello_context(),
    ));
    let lines: Vec<&str> = second.lines().collect();
    let copy = lines
        .iter()
        .position(|l| l.ends_with(" : COPY hello.txt /hello.txt"))
        .expect("COPY step");
    assert_eq!(lines[copy + 1], " ---> Using cache", "{second}");
    assert!(
        !second.contains(" ---> Done "),
        "nothing runs on a rebuild:\n{second}"
    );
    assert!(second.contains("Successfully built "), "{second}");
    // Both builds produce an image id.
    assert!(first.contains("Successfully built "), "{first}");
}

fn json_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Checks the event grammar: build_started first, each step started before its other events
/// and finished exactly once, image_written before build_finished, which is last.
fn check_event_order(events: &[Value]) -> Vec<(u64, String)> {
    assert_eq!(events[0]["type"], "build_started", "{events:?}");
    assert_eq!(
        events.last().unwrap()["type"],
        "build_finished",
        "{events:?}"
    );
    let mut state = std::collections::HashMap::new();
    let mut ends = Vec::new();
    for e in events {
        let ty = e["type"].as_str().unwrap();
        match ty {
            "step_started" => {
                let step = e["step"].as_u64().unwrap();
                assert!(
                    state.insert(step, "running").is_none(),
                    "started twice: {e}"
                );
                assert!(
                    e["instruction"].as_str().is_some() && e["line"].as_u64().unwrap() >= 1,
                    "{e}"
                );
            }
            "step_log" | "step_cached" | "step_done" | "step_failed" => {
                let step = e["step"].as_u64().unwrap();
                assert_eq!(
                    state.get(&step),
                    Some(&"running"),
                    "{ty} outside a running step: {e}"
                );
                if ty != "step_log" {
                    state.insert(step, "ended");
                    ends.push((step, ty.to_owned()));
                }
            }
            _ => {}
        }
    }
    assert!(
        state.values().all(|s| *s == "ended"),
        "every step ends: {state:?}"
    );
    ends
}

#[test]
fn json_progress_event_order_and_cached_markers() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let out = build(
        &state,
        &["--progress=json", "-t", "hello:json"],
        &hello_context(),
    );
    let (stdout, stderr) = ok(&out);
    assert_eq!(stdout, "");
    let events = json_events(&stderr);
    let ends = check_event_order(&events);
    assert!(ends.iter().any(|(_, t)| t == "step_done"), "{stderr}");
    let total = events[0]["total_steps"].as_u64().unwrap() as usize;
    assert_eq!(ends.len(), total, "{stderr}");
    let written: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "image_written")
        .collect();
    assert_eq!(written.len(), 1, "{stderr}");
    assert!(
        written[0]["config_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        written[0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "docker.io/library/hello:json"),
        "{stderr}"
    );
    assert_eq!(events.last().unwrap()["success"], true);

    let out = build(
        &state,
        &["--progress=json", "-t", "hello:json"],
        &hello_context(),
    );
    let events = json_events(&ok(&out).1);
    let ends = check_event_order(&events);
    assert!(
        ends.iter().all(|(_, t)| t == "step_cached"),
        "every step cached on a rebuild: {ends:?}"
    );
    let again: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "image_written")
        .collect();
    assert!(
        again[0]["config_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{again:?}"
    );
}

#[test]
fn quiet_iidfile_and_metadata_file() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let dir = tempdir();
    let iid = dir.path().join("iid");
    let meta = dir.path().join("meta.json");
    let out = kiln(&state)
        .args(["build", "-q", "-t", "hello:q", "--iidfile"])
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta)
        .arg(hello_context())
        .output()
        .unwrap();
    let (stdout, stderr) = ok(&out);
    assert_eq!(stderr, "", "quiet prints nothing on stderr");
    let id = stdout.trim_end();
    assert!(id.len() == 71 && id.starts_with("sha256:"), "{stdout:?}");
    assert_eq!(stdout, format!("{id}\n"));
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    let m: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id);
    assert!(
        m["containerimage.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{m}"
    );
    assert_eq!(m["image.name"], "hello:q");
    // --progress=quiet is the same as -q.
    let out = build(&state, &["--progress=quiet"], &hello_context());
    let (stdout, stderr) = ok(&out);
    assert_eq!(stderr, "");
    assert!(
        stdout.starts_with("sha256:") && stdout.len() == 72 && stdout.ends_with('\n'),
        "{stdout:?}"
    );
}

#[test]
fn outputs_oci_docker_local_tar() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let dir = tempdir();
    let d = dir.path();
    let spec = |s: &str| s.replace("$D", &d.display().to_string());
    let args = [
        "-o".to_owned(),
        spec("type=oci,dest=$D/img.tar"),
        "--output".to_owned(),
        spec("type=oci,dest=$D/layout,tar=false"),
        "--output".to_owned(),
        spec("type=docker,dest=$D/docker.tar,name=hello:docker"),
        "--output".to_owned(),
        spec("type=local,dest=$D/rootfs"),
        "--output".to_owned(),
        spec("type=tar,dest=$D/rootfs.tar"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&build(&state, &args, &hello_context()));
    for layout in [d.join("img.tar"), d.join("layout")] {
        let (config, files) = oci_image(&layout);
        assert_eq!(
            files["hello.txt"],
            b"hello from kiln\n",
            "{}",
            layout.display()
        );
        assert_eq!(files["etc/hostname"], b"kiln-hello\n");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello.txt"]));
        assert_eq!(config["architecture"], "amd64");
    }
    let docker = tar_entries(&std::fs::read(d.join("docker.tar")).unwrap());
    let manifest: Value = serde_json::from_slice(&docker["manifest.json"]).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["hello:docker"]),
        "{manifest}"
    );
    assert_eq!(
        std::fs::read(d.join("rootfs/hello.txt")).unwrap(),
        b"hello from kiln\n"
    );
    let rootfs = tar_entries(&std::fs::read(d.join("rootfs.tar")).unwrap());
    assert_eq!(rootfs["hello.txt"], b"hello from kiln\n");
}

#[test]
fn output_tar_to_stdout() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let out = build(&state, &["--progress=plain", "-o", "-"], &hello_context());
    assert!(out.status.success(), "{}", text(&out).1);
    let files = tar_entries(&out.stdout);
    assert_eq!(files["hello.txt"], b"hello from kiln\n");
}

#[test]
fn build_args_from_flag_and_environment_and_labels() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let dir = tempdir();
    let dest = format!("type=oci,dest={}/o,tar=false", dir.path().display());
    ok(&build(
        &state,
        &[
            "--build-arg",
            "GREETING=bonjour",
            "--label",
            "team=build",
            "--label",
            "tier=1",
            "-o",
            &dest,
        ],
        &hello_context(),
    ));
    let (config, _) = oci_image(&dir.path().join("o"));
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "GREETING=bonjour"), "{env:?}");
    assert_eq!(config["config"]["Labels"]["team"], "build");
    assert_eq!(config["config"]["Labels"]["tier"], "1");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "kiln hello"
    );

    // `--build-arg NAME` takes the value from kiln's environment.
    let dest = format!("type=oci,dest={}/e,tar=false", dir.path().display());
    let out = kiln(&state)
        .env("GREETING", "from-env")
        .args(["build", "--build-arg", "GREETING", "-o", &dest])
        .arg(hello_context())
        .output()
        .unwrap();
    ok(&out);
    let (config, _) = oci_image(&dir.path().join("e"));
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=from-env"),
        "{config}"
    );
}

const MULTI: &str = "FROM scratch AS base\nCOPY a.txt /a.txt\n\nFROM base AS final\nCOPY b.txt /b.txt\n\nFROM scratch AS broken\nCOPY missing.txt /\n";

#[test]
fn target_selects_a_stage_and_unused_stages_do_not_fail() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[("Dockerfile", MULTI), ("a.txt", "A\n"), ("b.txt", "B\n")],
    );
    let dest = format!("type=local,dest={}/out", ctx.path().display());
    ok(&build(
        &state,
        &["--target", "final", "-o", &dest],
        ctx.path(),
    ));
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("out/b.txt")).unwrap(),
        "B\n"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("out/a.txt")).unwrap(),
        "A\n"
    );
    // The last stage is the default target, and it is broken: a clear error naming the file.
    let out = build(&state, &["--progress=plain"], ctx.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out).1;
    assert!(stderr.contains("missing.txt"), "{stderr}");
    assert!(
        stderr.contains(">>> COPY missing.txt /"),
        "the excerpt marks the line:\n{stderr}"
    );
}

#[test]
fn no_cache_and_no_cache_filter() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = tempdir();
    write_files(
        ctx.path(),
        &[("Dockerfile", MULTI), ("a.txt", "A\n"), ("b.txt", "B\n")],
    );
    ok(&build(&state, &["--target", "final"], ctx.path()));
    let (_, all) = ok(&build(
        &state,
        &["--progress=plain", "--target", "final", "--no-cache"],
        ctx.path(),
    ));
    assert!(!all.contains("Using cache"), "{all}");
    let (_, some) = ok(&build(
        &state,
        &[
            "--progress=plain",
            "--target",
            "final",
            "--no-cache-filter",
            "final",
        ],
        ctx.path(),
    ));
    let lines: Vec<&str> = some.lines().collect();
    let a = lines
        .iter()
        .position(|l| l.ends_with(": COPY a.txt /a.txt"))
        .expect("COPY a");
    let b = lines
        .iter()
        .position(|l| l.ends_with(": COPY b.txt /b.txt"))
        .expect("COPY b");
    assert!(
        lines[a + 1].starts_with(" ---> Using cache"),
        "base is cached:\n{some}"
    );
    assert!(
        lines[b + 1].starts_with(" ---> Done"),
        "final runs again:\n{some}"
    );
}

#[test]
fn tar_context_on_stdin_and_dockerfile_on_stdin() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_dir_all(".", hello_context()).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o4750);
    header.set_cksum();
    archive
        .append_data(&mut header, "tool.sh", &b"hi\n"[..])
        .unwrap();
    // A later entry replaces the example's Dockerfile: copy the whole context.
    let df = b"FROM scratch\nCOPY . /\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(df.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "Dockerfile", &df[..])
        .unwrap();
    let bytes = archive.into_inner().unwrap();
    let dir = tempdir();
    let dest = format!("type=local,dest={}/ctx", dir.path().display());
    let mut child = kiln(&state)
        .args(["build", "--progress=plain", "-o", &dest, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    ok(&out);
    assert_eq!(
        std::fs::read(dir.path().join("ctx/hello.txt")).unwrap(),
        b"hello from kiln\n"
    );
    let mode = std::fs::metadata(dir.path().join("ctx/tool.sh"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        0o4750,
        "modes (setuid included) from the tar context are kept"
    );

    // `-f` with a tar context names a file inside the archive.
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_dir_all(".", hello_context()).unwrap();
    let df = b"FROM scratch\nCOPY etc/hostname /from-sub\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(df.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "sub/Dockerfile.alt", &df[..])
        .unwrap();
    let bytes = archive.into_inner().unwrap();
    let dest = format!("type=local,dest={}/sub", dir.path().display());
    let mut child = kiln(&state)
        .args(["build", "-f", "sub/Dockerfile.alt", "-o", &dest, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    ok(&child.wait_with_output().unwrap());
    assert_eq!(
        std::fs::read(dir.path().join("sub/from-sub")).unwrap(),
        b"kiln-hello\n"
    );

    let dest = format!("type=local,dest={}/df", dir.path().display());
    let mut child = kiln(&state)
        .args(["build", "-f", "-", "-o", &dest])
        .arg(hello_context())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY etc/hostname /name\n")
        .unwrap();
    ok(&child.wait_with_output().unwrap());
    assert_eq!(
        std::fs::read(dir.path().join("df/name")).unwrap(),
        b"kiln-hello\n"
    );
}

#[test]
fn platform_jobs_pull_and_root_flags() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let other_root = tempdir();
    let out = kiln(&state)
        .args(["--root"])
        .arg(other_root.path())
        .args([
            "build",
            "--platform",
            "linux/amd64",
            "--jobs",
            "1",
            "--pull",
            "-q",
        ])
        .arg(hello_context())
        .output()
        .unwrap();
    ok(&out);
    // --root wins over KILN_ROOT: the state went to other_root.
    assert!(
        std::fs::read_dir(other_root.path())
            .unwrap()
            .next()
            .is_some(),
        "--root is used"
    );
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "KILN_ROOT is overridden"
    );
}

#[test]
fn unsupported_cache_import_export_warns() {
    if common::not_root() {
        return;
    }
    // Registry and local caches are supported (tests/cache/export.rs); the rest is warned about.
    let state = tempdir();
    let out = build(
        &state,
        &[
            "--progress=plain",
            "--cache-from",
            "type=gha,scope=x",
            "--cache-to",
            "type=inline",
        ],
        &hello_context(),
    );
    let (_, stderr) = ok(&out);
    assert!(
        stderr.contains("warning: `--cache-from type=gha` is not supported yet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: `--cache-to type=inline` is not supported yet"),
        "{stderr}"
    );
    // In JSON the warnings follow build_started, which stays the first event.
    let out = build(
        &state,
        &["--progress=json", "--cache-to", "type=s3,bucket=b"],
        &hello_context(),
    );
    let events = json_events(&ok(&out).1);
    check_event_order(&events);
    // (after the environment event that follows build_started)
    let w = usize::from(events[1]["type"] == "environment") + 1;
    assert_eq!(events[w]["type"], "warning", "{events:?}");
    assert!(
        events[w]["message"]
            .as_str()
            .unwrap()
            .starts_with("`--cache-to type=s3` is not supported yet")
    );
}

#[test]
fn a_failing_run_in_a_multi_stage_build_shows_a_helpful_report() {
    if need_root() {
        return;
    }
    let df = "FROM scratch AS tools\nCOPY busybox /busybox\n\nFROM tools AS app\nRUN [\"/busybox\", \"sh\", \"-c\", \"echo preparing; echo oops >&2; exit 3\"]\nCOPY Dockerfile /\n";
    let Some(ctx) = busybox_context(df) else {
        return;
    };
    let state = tempdir();
    for progress in ["plain", "tty"] {
        let out = build(&state, &["--progress", progress], ctx.path());
        assert_eq!(out.status.code(), Some(1), "{progress}");
        let stderr = text(&out).1;
        assert!(
            stderr.contains("preparing\n"),
            "{progress}: output is shown:\n{stderr}"
        );
        assert!(
            stderr.contains("oops\n"),
            "{progress}: stderr output is shown:\n{stderr}"
        );
        assert!(
            stderr.contains(
                "Dockerfile:5\n--------------------\n   3 |     \n   4 |     FROM tools AS app\n   5 | >>> RUN [\"/busybox\", \"sh\", \"-c\", \"echo preparing; echo oops >&2; exit 3\"]\n   6 |     COPY Dockerfile /\n--------------------\n"
            ),
            "{progress}: excerpt:\n{stderr}"
        );
        let last = stderr.lines().last().unwrap();
        assert!(
            last.starts_with("error: ") && last.contains("exit code: 3"),
            "{progress}: {last}"
        );
    }
}

#[test]
fn network_none_and_secrets() {
    if need_root() {
        return;
    }
    let df = "FROM scratch\nCOPY busybox /busybox\n\
              RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox ls /sys/class/net > /ifaces\"]\n\
              RUN --mount=type=secret,id=tok [\"/busybox\", \"cp\", \"/run/secrets/tok\", \"/tok\"]\n";
    let Some(ctx) = busybox_context(df) else {
        return;
    };
    std::fs::write(ctx.path().join("secret.txt"), "s3cr3t").unwrap();
    let state = tempdir();
    let dest = format!("type=local,dest={}/out", ctx.path().display());
    let secret = format!("id=tok,src={}/secret.txt", ctx.path().display());
    let out = build(
        &state,
        &["--network", "none", "--secret", &secret, "-o", &dest],
        ctx.path(),
    );
    ok(&out);
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("out/ifaces")).unwrap(),
        "lo\n"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("out/tok")).unwrap(),
        "s3cr3t"
    );

    // `--network host` sees the host's interfaces; a secret can come from the environment.
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let dest = format!("type=local,dest={}/host", ctx.path().display());
    let out = kiln(&state)
        .env("KILN_TEST_TOKEN", "from-env")
        .args([
            "build",
            "--network",
            "host",
            "--secret",
            "id=tok,env=KILN_TEST_TOKEN",
            "-o",
            &dest,
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    ok(&out);
    let ifaces = std::fs::read_to_string(ctx.path().join("host/ifaces")).unwrap();
    assert_eq!(ifaces.lines().count(), host.len(), "{ifaces} vs {host:?}");
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("host/tok")).unwrap(),
        "from-env"
    );
}

#[test]
fn ssh_flag_is_accepted() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let sock_dir = tempdir();
    let sock = sock_dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ssh = format!("default={}", sock.display());
    ok(&build(&state, &["--ssh", &ssh, "-q"], &hello_context()));
    // A RUN --mount=type=ssh step finds the agent socket.
    let df = "FROM scratch\nCOPY busybox /busybox\n\
              RUN --mount=type=ssh [\"/busybox\", \"sh\", \"-c\", \"test -S $SSH_AUTH_SOCK && echo ok > /ssh\"]\n";
    let Some(ctx) = busybox_context(df) else {
        return;
    };
    let dest = format!("type=local,dest={}/out", ctx.path().display());
    ok(&build(&state, &["--ssh", &ssh, "-o", &dest], ctx.path()));
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("out/ssh")).unwrap(),
        "ok\n"
    );
}

#[test]
fn push_to_a_registry() {
    if common::not_root() {
        return;
    }
    let Some(registry) = common::registry::Registry::start(None) else {
        return;
    };
    let state = tempdir();
    let name = format!("{}/kiln-cli-test/hello:1", registry.addr);
    let (_, stderr) = ok(&build(
        &state,
        &["--progress=plain", "-t", &name, "--push"],
        &hello_context(),
    ));
    let manifest = registry.get("/v2/kiln-cli-test/hello/manifests/1", None);
    let manifest = manifest.unwrap_or_else(|| panic!("pushed manifest is served:\n{stderr}"));
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert!(m["layers"].as_array().is_some_and(|l| !l.is_empty()), "{m}");
    // `type=registry` is the same as --push.
    let out = format!("type=registry,name={}/kiln-cli-test/hello:2", registry.addr);
    ok(&build(&state, &["-q", "-o", &out], &hello_context()));
    assert!(
        registry
            .get("/v2/kiln-cli-test/hello/manifests/2", None)
            .is_some()
    );
}

#[test]
fn dockerfile_from_another_path() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let ctx = tempdir();
    let elsewhere = tempdir();
    write_files(ctx.path(), &[("hello.txt", "hi\n")]);
    let df = elsewhere.path().join("Dockerfile.dev");
    std::fs::write(&df, "FROM scratch\nCOPY hello.txt /x\nCOPY nope /\n").unwrap();
    let out = kiln(&state)
        .args(["build", "--progress=plain", "-f"])
        .arg(&df)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out).1;
    assert!(
        stderr.contains("Dockerfile.dev:3\n--------------------\n"),
        "{stderr}"
    );
    assert!(stderr.contains("   3 | >>> COPY nope /\n"), "{stderr}");
    std::fs::write(&df, "FROM scratch\nCOPY hello.txt /x\n").unwrap();
    let dest = format!("type=local,dest={}/out", elsewhere.path().display());
    let out = kiln(&state)
        .args(["build", "-q", "-o", &dest, "--file"])
        .arg(&df)
        .arg(ctx.path())
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        std::fs::read_to_string(elsewhere.path().join("out/x")).unwrap(),
        "hi\n"
    );
}

#[test]
fn outputs_in_other_compressions() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let dir = tempdir();
    let oci = format!(
        "type=oci,dest={}/zstd,tar=false,compression=zstd",
        dir.path().display()
    );
    let docker = format!(
        "type=docker,dest={}/plain.tar,compression=uncompressed",
        dir.path().display()
    );
    ok(&build(
        &state,
        &["-t", "hello:z", "-o", &oci, "-o", &docker],
        &hello_context(),
    ));

    let files = common::oci::layout_files(&dir.path().join("zstd"));
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let blob = |d: &str| files[&format!("blobs/{}", d.replacen(':', "/", 1))].clone();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
        let data = blob(layer["digest"].as_str().unwrap());
        assert_eq!(&data[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    }

    let archive = tar_entries(&std::fs::read(dir.path().join("plain.tar")).unwrap());
    let manifest: Value = serde_json::from_slice(&archive["manifest.json"]).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["hello:z"]),
        "{manifest}"
    );
    let mut all = std::collections::BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let data = &archive[layer.as_str().unwrap()];
        assert_ne!(&data[..2], &[0x1f, 0x8b], "not gzip");
        all.extend(tar_entries(data));
    }
    assert_eq!(all["hello.txt"], b"hello from kiln\n");
}

#[test]
fn pull_re_resolves_the_base_image() {
    if common::not_root() {
        return;
    }
    let Some(registry) = common::registry::Registry::start(None) else {
        return;
    };
    let state = tempdir();
    let base = format!("{}/kiln-cli-test/base:1", registry.addr);
    // Publish a base image holding `v1`, build on it, then publish `v2` under the same tag.
    let publish = |version: &str| {
        let ctx = tempdir();
        write_files(
            ctx.path(),
            &[
                ("Dockerfile", "FROM scratch\nCOPY version /version\n"),
                ("version", version),
            ],
        );
        let other_state = tempdir();
        ok(&build(
            &other_state,
            &["-q", "-t", &base, "--push"],
            ctx.path(),
        ));
    };
    publish("v1\n");
    let app = tempdir();
    write_files(
        app.path(),
        &[("Dockerfile", &format!("FROM {base}\nCOPY Dockerfile /\n"))],
    );
    let out_dir = tempdir();
    let dest = |name: &str| format!("type=local,dest={}/{name}", out_dir.path().display());
    let version =
        |name: &str| std::fs::read_to_string(out_dir.path().join(name).join("version")).unwrap();
    ok(&build(&state, &["-o", &dest("first")], app.path()));
    assert_eq!(version("first"), "v1\n");
    publish("v2\n");
    ok(&build(&state, &["-o", &dest("stored")], app.path()));
    assert_eq!(
        version("stored"),
        "v1\n",
        "without --pull the stored base is used"
    );
    ok(&build(
        &state,
        &["--pull", "-o", &dest("pulled")],
        app.path(),
    ));
    assert_eq!(version("pulled"), "v2\n", "--pull looks the tag up again");
}

#[test]
fn debug_shows_a_timed_span_per_step() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let out = kiln(&state)
        .args([
            "--debug",
            "build",
            "--progress=plain",
            "--no-cache",
            "-t",
            "dbg:1",
        ])
        .arg(hello_context())
        .env_remove("KILN_LOG")
        .output()
        .expect("run kiln");
    let (_, stderr) = ok(&out);
    // One close line with its timing for each step, under the build's span.
    for (id, name) in [(1, "COPY hello.txt /hello.txt"), (2, "COPY etc/ /etc/")] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("step{{id={id} name={name}}}: close time.busy=")))
            .unwrap_or_else(|| panic!("no close line of step {id} in:\n{stderr}"));
        assert!(line.contains("build{context="), "{line}");
        assert!(line.contains("time.idle="), "{line}");
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("export{output=image}: close time.busy=")),
        "{stderr}"
    );
    // Without --debug or KILN_LOG, no diagnostics.
    let out = kiln(&state)
        .args(["build", "--progress=plain"])
        .arg(hello_context())
        .env_remove("KILN_LOG")
        .output()
        .expect("run kiln");
    let (_, stderr) = ok(&out);
    assert!(!stderr.contains("time.busy="), "{stderr}");
}
