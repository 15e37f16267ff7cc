//! `kiln run` and image housekeeping end to end through the binary: the book's hello-uncle
//! example (examples/hello-uncle) built, run with its ENV and with `-e`, rebuilt from the cache,
//! run with another entrypoint and exit status; images found by ID and ID prefix; a rebuild's
//! dangling image listed as `<none>` and removed by `kiln image prune` with its blobs. Offline:
//! the `busybox` base is built locally from the host's static busybox.

mod common;

use std::path::{Path, PathBuf};

use common::{
    busybox_context, deferred_blob as deferred, kiln, not_root, snapshot_keys, stored_blob as blob,
    tempdir, text,
};

/// Mount points at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// A state directory holding `busybox:latest` (the host's static busybox with its applets in
/// /bin), so `FROM busybox` needs no registry; `None` after a skip message.
fn state_with_busybox() -> Option<tempfile::TempDir> {
    if not_root() {
        return None;
    }
    let ctx = busybox_context(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )?;
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-q", "-t", "busybox:latest"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    Some(state)
}

/// A copy of examples/hello-uncle.
fn hello_uncle() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hello-uncle");
    let dir = tempdir();
    for f in ["Dockerfile", "hello.sh"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy the example");
    }
    dir
}

fn build(state: &tempfile::TempDir, ctx: &Path, tag: &str) -> String {
    let out = kiln(state)
        .args(["build", "--progress=plain", "-t", tag])
        .arg(ctx)
        .output()
        .expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    format!("{o}{e}")
}

fn run_kiln(state: &tempfile::TempDir, args: &[&str]) -> (Option<i32>, String, String) {
    let out = kiln(state).args(args).output().expect("run kiln");
    let (o, e) = text(&out);
    (out.status.code(), o, e)
}

#[test]
fn hello_uncle_builds_runs_with_env_from_cache_and_with_another_entrypoint() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = hello_uncle();
    build(&state, ctx.path(), "hello-uncle");
    assert_eq!(
        run_kiln(&state, &["run", "hello-uncle"]),
        (Some(0), "Bob is your uncle.\n".into(), String::new())
    );
    assert_eq!(
        run_kiln(&state, &["run", "--rm", "-e", "NAME=Sam", "hello-uncle"]),
        (Some(0), "Sam is your uncle.\n".into(), String::new())
    );
    let again = build(&state, ctx.path(), "hello-uncle");
    assert_eq!(again.matches(" ---> Using cache").count(), 2, "{again}");
    assert!(
        again.contains("Step 2/2 : COPY --chmod=755 hello.sh"),
        "{again}"
    );
    let (code, _, err) = run_kiln(
        &state,
        &["run", "--entrypoint", "sh", "hello-uncle", "-c", "exit 7"],
    );
    assert_eq!(code, Some(7), "{err}");
    // Arguments replace CMD; stderr passes through; env-file then -e; -w and -u apply.
    let envf = ctx.path().join("env");
    std::fs::write(&envf, "# comment\nNAME=File\nOTHER=x\n").expect("write env file");
    let (code, out, err) = run_kiln(
        &state,
        &[
            "run",
            "--env-file",
            envf.to_str().expect("utf-8 path"),
            "-e",
            "OTHER=y",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "--network",
            "none",
            "hello-uncle",
            "sh",
            "-c",
            "echo $NAME $OTHER $(pwd) $(id -u):$(id -g); echo oops >&2; touch /tmp/written",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "File y /tmp 1000:1000\n");
    assert_eq!(err, "oops\n");
    // Each container starts from the image, not from what an earlier one wrote.
    let (code, _, _) = run_kiln(
        &state,
        &["run", "hello-uncle", "test", "-e", "/tmp/written"],
    );
    assert_eq!(code, Some(1));
    // A missing command: docker's 127.
    let (code, _, err) = run_kiln(&state, &["run", "hello-uncle", "no-such-command"]);
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("no-such-command"), "{err}");
    let (code, _, err) = run_kiln(&state, &["run", "hello-uncle", "/no/such/file"]);
    assert_eq!(code, Some(127), "{err}");
    let (code, _, err) = run_kiln(&state, &["run", "hello-uncle", "/usr/local"]);
    assert_eq!(code, Some(126), "{err}");
    // An unknown user is kiln's failure: 125, as docker.
    let (code, _, err) = run_kiln(&state, &["run", "-u", "bob", "hello-uncle", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("unable to find user bob"), "{err}");
    // Nothing is left: no active snapshot, no mount under the state dir.
    let active: Vec<String> = snapshot_keys(state.path())
        .into_iter()
        .filter(|k| k.starts_with("active-") || k.starts_with("view-"))
        .collect();
    assert!(active.is_empty(), "{active:?}");
    let mounts = mounts_below(state.path());
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn images_are_found_by_id_and_unique_id_prefix() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = hello_uncle();
    build(&state, ctx.path(), "hello-uncle");
    let (_, ids, _) = run_kiln(&state, &["images", "-q", "hello-uncle"]);
    let short = ids.trim().to_owned();
    assert_eq!(short.len(), 12, "{ids}");
    let (_, full, _) = run_kiln(&state, &["inspect", "hello-uncle"]);
    assert!(full.contains("Bob"), "{full}");
    for id in [short.as_str(), &short[..6], &format!("sha256:{short}")] {
        assert_eq!(
            run_kiln(&state, &["run", id]),
            (Some(0), "Bob is your uncle.\n".into(), String::new()),
            "run {id}"
        );
    }
    let tar = ctx.path().join("img.tar");
    let (code, _, err) = run_kiln(
        &state,
        &["save", "-o", tar.to_str().expect("utf-8"), &short[..8]],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::metadata(&tar).expect("archive").len() > 1000);
    let (code, _, err) = run_kiln(&state, &["tag", &short[..8], "again:v1"]);
    assert_eq!(code, Some(0), "{err}");
    // Two names: rmi by ID is refused as docker does; by name it untags.
    let (code, _, err) = run_kiln(&state, &["rmi", &short]);
    assert_eq!(code, Some(1));
    assert!(err.contains("referenced in multiple repositories"), "{err}");
    let (code, out, _) = run_kiln(&state, &["rmi", "again:v1"]);
    assert_eq!((code, out.as_str()), (Some(0), "Untagged: again:v1\n"));
    let (code, out, err) = run_kiln(&state, &["rmi", &short[..7]]);
    assert_eq!(code, Some(0), "{err}");
    // Its last tag gone, the image is deleted, with the blobs only it used.
    assert!(
        out.starts_with(&format!(
            "Untagged: hello-uncle:latest\nDeleted: sha256:{short}"
        )),
        "{out}"
    );
    let blobs = state.path().join("content/blobs/sha256");
    let left: Vec<String> = std::fs::read_dir(&blobs)
        .expect("blobs")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&short))
        .collect();
    assert!(left.is_empty(), "config blob left: {left:?}");
    // The base it was built on is untouched.
    let (code, out, _) = run_kiln(&state, &["run", "busybox", "echo", "base"]);
    assert_eq!((code, out.as_str()), (Some(0), "base\n"));
    let (code, _, err) = run_kiln(&state, &["run", "--pull", "never", "hello-uncle"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("hello-uncle"), "{err}");
}

#[test]
fn a_rebuild_leaves_a_dangling_image_that_image_prune_removes_with_its_blobs() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = hello_uncle();
    build(&state, ctx.path(), "hello-uncle");
    let (_, old_id, _) = run_kiln(&state, &["images", "-q", "hello-uncle"]);
    let (_, inspect, _) = run_kiln(&state, &["inspect", "hello-uncle"]);
    let config: serde_json::Value = serde_json::from_str(&inspect).expect("config json");
    let old_layer = config["rootfs"]["diff_ids"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|d| d.as_str())
        .expect("diff_ids")
        .to_owned();
    std::fs::write(
        ctx.path().join("hello.sh"),
        "#!/bin/sh\necho \"$NAME is still your uncle.\"\n",
    )
    .expect("change the script");
    build(&state, ctx.path(), "hello-uncle");
    let (_, listing, _) = run_kiln(&state, &["images"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("<none>") && l.contains(old_id.trim())),
        "{listing}"
    );
    let (_, dangling, _) = run_kiln(&state, &["images", "--filter", "dangling=true", "-q"]);
    assert_eq!(dangling, old_id);
    let (_, tagged, _) = run_kiln(&state, &["images", "--filter", "dangling=false", "-q"]);
    assert!(!tagged.contains(old_id.trim()), "{tagged}");
    // The old image's blobs: its config, and (uncompressed local layers) its last layer.
    let old_full = run_kiln(&state, &["inspect", old_id.trim()]).1;
    assert!(
        old_full.contains(&old_layer),
        "the old image by id: {old_full}"
    );
    let old_config = std::fs::read_dir(state.path().join("content/blobs/sha256"))
        .expect("blobs")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(old_id.trim()))
        .expect("the old config blob");
    assert!(
        deferred(state.path(), &old_layer).exists(),
        "{old_layer} not deferred: {:?} {:?}",
        std::fs::read_dir(state.path().join("content/deferred")).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>()),
        std::fs::read_dir(state.path().join("content/blobs/sha256")).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>())
    );
    assert!(
        !blob(state.path(), &old_layer).exists(),
        "written at build time"
    );
    // The build cache still names the old layer: drop it (the dangling image still needs the
    // layer, so it is written before its snapshot goes), then prune the images.
    let (code, _, err) = run_kiln(&state, &["prune", "--all"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        blob(state.path(), &old_layer).is_file(),
        "the dangling image's layer was not written before its snapshot went"
    );
    let (code, out, err) = run_kiln(&state, &["image", "prune", "-f"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Deleted Images:"), "{out}");
    assert!(out.contains("Total reclaimed space: "), "{out}");
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");
    assert!(
        !blob(state.path(), &old_config).exists(),
        "old config blob left"
    );
    assert!(
        !blob(state.path(), &old_layer).exists() && !deferred(state.path(), &old_layer).exists(),
        "old layer blob left"
    );
    let (_, dangling, _) = run_kiln(&state, &["images", "--filter", "dangling=true", "-q"]);
    assert_eq!(dangling, "");
    // The current image is intact.
    assert_eq!(
        run_kiln(&state, &["run", "hello-uncle"]),
        (Some(0), "Bob is still your uncle.\n".into(), String::new())
    );
    let (_, out, _) = run_kiln(&state, &["image", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
}

#[test]
fn an_image_missing_from_the_store_is_pulled_first_as_docker_does() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let Some(registry) = common::registry::Registry::start(None) else {
        return;
    };
    let name = format!("{}/busybox:latest", registry.addr);
    let insecure = ["--insecure-registry", registry.addr.as_str()];
    let (code, _, err) = run_kiln(&state, &["tag", "busybox", &name]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run_kiln(&state, &[&["push"][..], &insecure, &[&name]].concat());
    assert_eq!(code, Some(0), "{err}");
    let fresh = tempdir();
    let (code, _, err) = run_kiln(&fresh, &["run", "--pull", "never", &name, "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("busybox"), "{err}");
    let run = |extra: &[&str]| {
        run_kiln(
            &fresh,
            &[&["run"][..], &insecure, extra, &[&name, "echo", "pulled"]].concat(),
        )
    };
    let (code, out, err) = run(&[]);
    assert_eq!((code, out.as_str()), (Some(0), "pulled\n"), "{err}");
    assert!(
        err.starts_with(&format!("Unable to find image '{name}' locally\n")),
        "{err}"
    );
    assert!(err.contains("Pull complete"), "{err}");
    // Now in the store: no pull.
    assert_eq!(run(&[]), (Some(0), "pulled\n".into(), String::new()));
    let (code, _, err) = run(&["--pull", "always"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Pulling from busybox"), "{err}");
    assert!(!err.contains("Unable to find"), "{err}");
}

/// Pids of the processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> Vec<String> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sigint_kills_the_container_and_leaves_nothing() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = hello_uncle();
    build(&state, ctx.path(), "hello-uncle");
    let mut child = kiln(&state)
        .args(["run", "hello-uncle", "sleep", "37.25"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let t0 = std::time::Instant::now();
    while processes(&["sleep", "37.25"]).is_empty() {
        assert!(t0.elapsed().as_secs() < 20, "the container never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The first SIGINT goes to PID 1, which (as any namespace init without a handler, and as
    // under docker) ignores it; the second kills the container.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "sleep ignores SIGINT"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t1 = std::time::Instant::now();
    let status = child.wait().expect("wait");
    assert!(t1.elapsed().as_secs() < 10, "kiln run outlived the signal");
    assert_eq!(status.code(), Some(137));
    assert!(
        processes(&["sleep", "37.25"]).is_empty(),
        "the container survived"
    );
    let active: Vec<String> = snapshot_keys(state.path())
        .into_iter()
        .filter(|k| k.starts_with("active-"))
        .collect();
    assert!(active.is_empty(), "{active:?}");
    let mounts = mounts_below(state.path());
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn images_lists_with_docker_formats_and_filters() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let ctx = hello_uncle();
    build(&state, ctx.path(), "hello-uncle");
    let (code, out, err) = run_kiln(&state, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "busybox:latest\nhello-uncle:latest\n");
    let (_, out, _) = run_kiln(&state, &["images", "--filter", "reference=hello*", "-q"]);
    let (_, id, _) = run_kiln(&state, &["images", "-q", "hello-uncle"]);
    assert_eq!(out, id);
    let (_, full, _) = run_kiln(&state, &["images", "-q", "--no-trunc", "hello-uncle"]);
    assert!(
        full.starts_with(&format!("sha256:{}", id.trim())) && full.len() == 72,
        "{full}"
    );
    let (_, json, _) = run_kiln(&state, &["images", "--format", "json", "hello-uncle"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one json object");
    assert_eq!(v["Repository"], "hello-uncle");
    assert_eq!(v["Tag"], "latest");
    assert_eq!(v["ID"], id.trim());
    assert_eq!(v["Containers"], "N/A");
    assert!(
        v["CreatedAt"]
            .as_str()
            .is_some_and(|s| s.ends_with(" +0000 UTC")),
        "{v}"
    );
    let (_, table, _) = run_kiln(
        &state,
        &[
            "images",
            "--format",
            "table {{.Repository}}\\t{{.ID}}",
            "hello-uncle",
        ],
    );
    assert_eq!(table, format!("REPOSITORY    IMAGE ID\nhello-uncle   {id}"));
    let (_, digests, _) = run_kiln(&state, &["images", "--digests", "hello-uncle"]);
    assert!(
        digests.starts_with("REPOSITORY    TAG      DIGEST"),
        "{digests}"
    );
    let (code, _, err) = run_kiln(&state, &["images", "--filter", "label=x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid filter 'label=x'"), "{err}");
}

#[test]
fn volumes_mounts_name_and_platform_flags() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    let host = tempdir();
    std::fs::write(host.path().join("in.txt"), "from the host\n").expect("write");
    let h = host.path().to_str().expect("utf-8 path");
    // Read-only: readable, not writable.
    let (code, out, err) = run_kiln(
        &state,
        &[
            "run",
            "--name",
            "reader",
            "-v",
            &format!("{h}:/data:ro"),
            "busybox",
            "sh",
            "-c",
            "cat /data/in.txt; echo x > /data/new 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "from the host\nread-only\n"),
        "{err}"
    );
    // Writable: the container's writes reach the host, as docker's volumes.
    let (code, out, err) = run_kiln(
        &state,
        &[
            "run",
            "-v",
            &format!("{h}:/data"),
            "busybox",
            "sh",
            "-c",
            "echo changed > /data/in.txt && cat /data/in.txt",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "changed\n"), "{err}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("in.txt")).expect("read"),
        "changed\n"
    );
    // --mount bind (readonly) and tmpfs.
    let (code, out, err) = run_kiln(
        &state,
        &[
            "run",
            "--mount",
            &format!("type=bind,source={h},target=/src,readonly"),
            "--mount",
            "type=tmpfs,target=/scratch",
            "busybox",
            "sh",
            "-c",
            "cat /src/in.txt; echo t > /scratch/t && cat /scratch/t; grep -c ' /scratch tmpfs' /proc/mounts",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "changed\nt\n1\n"), "{err}");
    // Usage errors exit 2 and say why.
    for (flags, message) in [
        (
            &["-v", "named:/data"][..],
            "named volumes are not supported",
        ),
        (&["-v", "/tmp:rel"][..], "needs to be an absolute path"),
        (
            &["--mount", "type=volume,target=/x"][..],
            "type 'volume' is not supported",
        ),
    ] {
        let (code, _, err) = run_kiln(
            &state,
            &[&["run"][..], flags, &["busybox", "true"]].concat(),
        );
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        assert!(err.contains(message), "{flags:?}: {err}");
    }
    // A local image of another platform is not the one asked for (docker's words).
    let (code, _, err) = run_kiln(
        &state,
        &[
            "run",
            "--pull",
            "never",
            "--platform",
            "linux/arm64",
            "busybox",
            "true",
        ],
    );
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains(
            "image with reference busybox was found but does not match the specified platform: \
             wanted linux/arm64, actual: linux/amd64"
        ),
        "{err}"
    );
    let (code, _, err) = run_kiln(
        &state,
        &[
            "run",
            "--mount",
            "type=bind,source=/no/such/dir,target=/x",
            "busybox",
            "true",
        ],
    );
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("bind source path does not exist"), "{err}");
    let (code, _, err) = run_kiln(
        &state,
        &["run", "--platform", "linux/amd64", "busybox", "true"],
    );
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn signals_stdin_tty_and_published_ports() {
    let Some(state) = state_with_busybox() else {
        return;
    };
    // SIGTERM reaches a PID 1 that handles it; its exit status is kiln's.
    let mut child = kiln(&state)
        .args([
            "run",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("read");
    assert_eq!(line, "ready\n");
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    assert_eq!((status.code(), rest.as_str()), (Some(3), "got TERM\n"));

    // -i: kiln's stdin is the container's.
    let mut child = kiln(&state)
        .args([
            "run",
            "-i",
            "--network",
            "none",
            "busybox",
            "tr",
            "a-z",
            "A-Z",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start kiln run");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"piped in\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED IN\n");
    // Without -i the container's stdin is empty.
    let (code, out, _) = run_kiln(&state, &["run", "--network", "none", "busybox", "cat"]);
    assert_eq!((code, out.as_str()), (Some(0), ""));

    // -t: a pty of the default size (no terminal here), output as the terminal shows it.
    let (code, out, err) = run_kiln(
        &state,
        &[
            "run",
            "-t",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "tty; stty size",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.ends_with("\r\n24 80\r\n"), "{out:?}");

    // -p: the private network's port reachable on the host.
    let (code, _, err) = run_kiln(
        &state,
        &["run", "--network", "host", "-p", "1:2", "busybox", "true"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("-p needs the private network"), "{err}");
    if !kiln_testkit::require_tool(
        "signals_stdin_tty_and_published_ports",
        "slirp4netns",
        "slirp4netns",
    ) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let www = tempdir();
    std::fs::write(www.path().join("index.html"), "published\n").expect("write");
    let mut child = kiln(&state)
        .args(["run", "-p", &format!("127.0.0.1:{port}:8080"), "-v"])
        .arg(format!("{}:/www:ro", www.path().display()))
        .args(["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let t0 = std::time::Instant::now();
    let answer = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            std::io::Write::write_all(&mut c, b"GET / HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut c, &mut s)?;
            Ok(s)
        });
        match got {
            Ok(s) if s.ends_with("published\n") => break s,
            _ if t0.elapsed().as_secs() < 30 => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => {
                let _ = child.kill();
                panic!("no answer on the published port: {other:?}");
            }
        }
    };
    if !answer.starts_with("HTTP/1.1 200 OK") {
        let _ = child.kill();
        panic!("{answer}");
    }
    // httpd, PID 1 without a SIGTERM handler, ignores the forwarded SIGTERM; a second one
    // kills the container.
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed().as_secs() > 20 {
            let _ = child.kill();
            panic!("kiln run outlived two SIGTERMs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(137), "killed by the second signal");

    // -p CONTAINER_PORT and -P: a free host port, printed as `docker port` prints it, answers.
    let ctx = tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nEXPOSE 8080/tcp\nRUN mkdir /www && echo exposed > /www/index.html\n",
    )
    .expect("write");
    build(&state, ctx.path(), "exposes:8080");
    for flags in [&["-p", "127.0.0.1::8080"][..], &["-p", "8080"], &["-P"]] {
        let mut child = kiln(&state)
            .arg("run")
            .args(flags)
            .args(["exposes:8080", "httpd", "-f", "-p", "8080", "-h", "/www"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start kiln run");
        let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).expect("read");
        let ip = if flags[0] == "-P" || flags[1] == "8080" {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let port: Option<u16> = line
            .strip_prefix(&format!("8080/tcp -> {ip}:"))
            .and_then(|p| p.trim_end().parse().ok());
        let Some(port) = port.filter(|p| *p != 0) else {
            let _ = child.kill();
            panic!("{flags:?}: no chosen port on stderr: {line:?}");
        };
        let t0 = std::time::Instant::now();
        loop {
            let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
                c.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                std::io::Write::write_all(&mut c, b"GET / HTTP/1.0\r\n\r\n")?;
                let mut s = String::new();
                std::io::Read::read_to_string(&mut c, &mut s)?;
                Ok(s)
            });
            match got {
                Ok(s) if s.starts_with("HTTP/1.1 200 OK") && s.ends_with("\r\n\r\nexposed\n") => {
                    break;
                }
                _ if t0.elapsed().as_secs() < 30 => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => {
                    let _ = child.kill();
                    panic!("{flags:?}: no answer on the chosen port {port}: {other:?}");
                }
            }
        }
        // Two SIGTERMs stop it cleanly (httpd ignores the first as PID 1).
        for _ in 0..2 {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(137), "{flags:?}");
    }
    assert_eq!(mounts_below(state.path()), Vec::<String>::new());
}

/// `kiln save` of `images` from `from`, loaded into a fresh state directory.
fn state_loaded_from(from: &tempfile::TempDir, images: &[&str]) -> tempfile::TempDir {
    let archive = from.path().join("images.tar");
    let (code, _, err) = run_kiln(
        from,
        &[
            &["save", "-o", archive.to_str().expect("utf-8")][..],
            images,
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{err}");
    let to = tempdir();
    let (code, _, err) = run_kiln(&to, &["load", "-i", archive.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{err}");
    to
}

#[test]
fn cache_from_a_local_image_by_name_or_id_prefix() {
    let Some(a) = state_with_busybox() else {
        return;
    };
    let ctx = tempdir();
    // Each RUN's output is new every time it runs.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nARG V=1\nRUN head -c 16 /dev/urandom | od -An -tx1 > /r\nCOPY f /f\n\
         RUN cat /r /f > /both && echo $V >> /both\nRUN head -c 16 /dev/urandom | od -An -tx1 > /t\n",
    )
    .expect("write");
    std::fs::write(ctx.path().join("f"), "one\n").expect("write");
    build(&a, ctx.path(), "app:v1");
    let cat = |state: &tempfile::TempDir, image: &str, file: &str| {
        let (code, out, err) = run_kiln(state, &["run", "--network", "none", image, "cat", file]);
        assert_eq!(code, Some(0), "{err}");
        out
    };
    let (both, t) = (cat(&a, "app:v1", "/both"), cat(&a, "app:v1", "/t"));
    let id = {
        let (code, out, err) = run_kiln(&a, &["images", "-q", "app:v1"]);
        assert_eq!(code, Some(0), "{err}");
        out.trim().to_owned()
    };
    assert_eq!(id.len(), 12, "{id}");
    let build_from = |state: &tempfile::TempDir, from: &str| {
        let out = kiln(state)
            .args([
                "build",
                "--progress=plain",
                "-t",
                "app:v2",
                "--cache-from",
                from,
            ])
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        let (o, e) = text(&out);
        assert!(out.status.success(), "{o}{e}");
        format!("{o}{e}")
    };

    // Without --cache-from the RUN steps run again in another store.
    let b = state_loaded_from(&a, &["busybox:latest", "app:v1"]);
    build(&b, ctx.path(), "app:fresh");
    assert_ne!(cat(&b, "app:fresh", "/both"), both, "a RUN ran again");
    // By name, and by ID prefix: every RUN is the image's (the COPY runs, and makes the same
    // layer), so the files are the first build's.
    for from in ["app:v1", &id[..8]] {
        let c = state_loaded_from(&a, &["busybox:latest", "app:v1"]);
        let log = build_from(&c, from);
        assert!(!log.contains("failed to import cache"), "{from}: {log}");
        assert_eq!(cat(&c, "app:v2", "/both"), both, "{from}: {log}");
        assert_eq!(cat(&c, "app:v2", "/t"), t, "{from}: {log}");
    }
    // A changed file: the first RUN still matches, the ones after the COPY run again.
    let d = state_loaded_from(&a, &["busybox:latest", "app:v1"]);
    std::fs::write(ctx.path().join("f"), "two\n").expect("write");
    build_from(&d, "app:v1");
    let r = cat(&a, "app:v1", "/r");
    assert_eq!(cat(&d, "app:v2", "/both"), format!("{r}two\n1\n"));
    assert_ne!(cat(&d, "app:v2", "/t"), t);
    // A different build arg: the RUN steps run again.
    std::fs::write(ctx.path().join("f"), "one\n").expect("write");
    let e = state_loaded_from(&a, &["busybox:latest", "app:v1"]);
    let out = kiln(&e)
        .args([
            "build",
            "-q",
            "-t",
            "app:v3",
            "--build-arg",
            "V=2",
            "--cache-from",
            "app:v1",
        ])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    // The arg is in every RUN's environment (and `created_by`) after `ARG V`: all run again.
    assert_ne!(cat(&e, "app:v3", "/r"), r);
    assert!(cat(&e, "app:v3", "/both").ends_with("\none\n2\n"));
    assert_ne!(cat(&e, "app:v3", "/t"), t);
}

#[test]
fn run_platform_picks_that_image_of_a_multi_platform_tag() {
    let test = "run_platform_picks_that_image_of_a_multi_platform_tag";
    if not_root() || !kiln_testkit::require_shared_registry(test) {
        return;
    }
    let multi = "127.0.0.1:5000/busybox:multi";
    let served = std::process::Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-H"])
        .arg("Accept: application/vnd.oci.image.index.v1+json")
        .arg("http://127.0.0.1:5000/v2/busybox/manifests/multi")
        .status()
        .is_ok_and(|s| s.success());
    let qemu = std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_ok_and(|s| {
        s.starts_with("enabled")
            && s.lines()
                .any(|l| l.starts_with("flags:") && l.contains('F'))
    });
    if !served || !qemu {
        kiln_testkit::skip(
            test,
            "needs ../shared/registry-up.sh --multi and qemu-user-static (qemu-aarch64, F flag)",
        );
        return;
    }
    let state = tempdir();
    let insecure = ["--insecure-registry", "127.0.0.1:5000"];
    let uname = |platform: Option<&str>, pull: &str| {
        let mut a = vec!["run", "--network", "none", "--pull", pull];
        a.extend(insecure);
        if let Some(p) = platform {
            a.extend(["--platform", p]);
        }
        a.extend([multi, "uname", "-m"]);
        run_kiln(&state, &a)
    };
    // Pulled for arm64, it runs arm64 busybox (through qemu): the index tag picks it.
    let (code, out, err) = uname(Some("linux/arm64"), "missing");
    assert_eq!((code, out.as_str()), (Some(0), "aarch64\n"), "{err}");
    let (code, out, err) = uname(Some("linux/arm64/v8"), "never");
    assert_eq!((code, out.as_str()), (Some(0), "aarch64\n"), "{err}");
    // The host's platform was not pulled: `--pull never` finds nothing, a pull brings it.
    let (code, _, err) = uname(None, "never");
    assert_eq!(code, Some(125), "{err}");
    let (code, out, err) = uname(None, "missing");
    assert_eq!((code, out.as_str()), (Some(0), "x86_64\n"), "{err}");
    assert!(err.contains("Unable to find image"), "{err}");
    let (code, out, err) = uname(Some("linux/arm64"), "never");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "aarch64\n"),
        "both now: {err}"
    );
    // A platform the index lacks.
    let (code, _, err) = uname(Some("linux/s390x"), "missing");
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("has no image for linux/s390x"), "{err}");

    // A multi-platform build's index, tagged locally: each platform's image runs.
    let ctx = tempdir();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {multi}\nARG TARGETPLATFORM\nRUN echo \"$TARGETPLATFORM $(uname -m)\" > /p\n"
        ),
    )
    .expect("write");
    let out = kiln(&state)
        .args([
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "both:1",
        ])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    for (p, want) in [
        ("linux/arm64", "linux/arm64 aarch64\n"),
        ("linux/amd64", "linux/amd64 x86_64\n"),
    ] {
        let (code, out, err) = run_kiln(
            &state,
            &[
                "run",
                "--network",
                "none",
                "--pull",
                "never",
                "--platform",
                p,
                "both:1",
                "cat",
                "/p",
            ],
        );
        assert_eq!((code, out.as_str()), (Some(0), want), "{p}: {err}");
    }
    let (code, out, err) = run_kiln(&state, &["run", "--network", "none", "both:1", "cat", "/p"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "linux/amd64 x86_64\n"),
        "{err}"
    );
}
