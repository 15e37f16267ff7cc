//! Multi-platform builds through the `kiln` binary: `--platform linux/amd64,linux/arm64` gives an
//! image index (pushed to a real registry, written as an OCI layout, one directory per platform
//! for `type=local`), arm64 RUN steps run through qemu-user (binfmt_misc), a
//! `FROM --platform=$BUILDPLATFORM` stage runs once for both platforms and is cached for a later
//! one-platform build, and what cannot be built fails before the build with a clear message.
//!
//! Needs root, the registry of ../shared/registry-up.sh --multi (busybox:multi, an index of
//! linux/amd64 + linux/arm64 busybox), docker-registry for the push target, and qemu-user-static
//! with binfmt-support (CI installs them; scripts/test.sh).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::registry::Registry;
use common::{kiln, tempdir, text};

/// The Dockerfile: a native stage, then the target stage with an emulated RUN.
const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM 127.0.0.1:5000/busybox:multi AS build
ARG TARGETARCH BUILDARCH
RUN echo \"built on $BUILDARCH for $TARGETARCH\" > /note
FROM 127.0.0.1:5000/busybox:multi
ARG TARGETPLATFORM
COPY --from=build /note /note
RUN uname -m > /arch && echo \"$TARGETPLATFORM\" > /platform
";

/// Whether the multi-platform base images are served (skips, or fails under CI, when not).
fn have_base() -> bool {
    let ok = Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            "http://127.0.0.1:5000/v2/busybox/manifests/multi",
        ])
        .status()
        .is_ok_and(|s| s.success());
    ok || !common::skip("needs ../shared/registry-up.sh --multi (busybox:multi)")
}

fn have_arm64_emulation() -> bool {
    let ok = std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_ok_and(|s| {
        s.starts_with("enabled")
            && s.lines()
                .any(|l| l.starts_with("flags:") && l.contains('F'))
    });
    ok || !common::skip("needs qemu-user-static + binfmt-support (qemu-aarch64 with the F flag)")
}

fn ready() -> bool {
    !common::not_root() && have_base() && have_arm64_emulation()
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}

fn build(state: &tempfile::TempDir, ctx: &Path, args: &[&str]) -> Output {
    kiln(state)
        .arg("build")
        .args(["--progress", "plain"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run kiln")
}

fn ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "kiln failed:\n{stdout}\n{stderr}");
    stderr
}

/// `GET` from a registry with every manifest media type accepted.
fn get(addr: &str, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

/// The ELF machine of an executable (0x3e x86-64, 0xb7 aarch64).
fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// One platform's image as pulled from the registry: (platform, config, merged files).
type PlatformImage = (String, serde_json::Value, BTreeMap<String, Vec<u8>>);

fn pull_index(addr: &str, repo: &str, tag: &str) -> Vec<PlatformImage> {
    let index = json(&get(addr, &format!("/v2/{repo}/manifests/{tag}")));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let mut out = Vec::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let p = &m["platform"];
        let mut platform = format!(
            "{}/{}",
            p["os"].as_str().expect("os"),
            p["architecture"].as_str().expect("arch")
        );
        if let Some(v) = p["variant"].as_str() {
            platform = format!("{platform}/{v}");
        }
        let digest = m["digest"].as_str().expect("digest");
        let manifest = json(&get(addr, &format!("/v2/{repo}/manifests/{digest}")));
        let config = json(&get(
            addr,
            &format!(
                "/v2/{repo}/blobs/{}",
                manifest["config"]["digest"].as_str().expect("config")
            ),
        ));
        let mut files = BTreeMap::new();
        for l in manifest["layers"].as_array().expect("layers") {
            let blob = get(
                addr,
                &format!("/v2/{repo}/blobs/{}", l["digest"].as_str().expect("digest")),
            );
            files.extend(common::oci::layer_entries(&blob));
        }
        out.push((platform, config, files));
    }
    out
}

fn file<'a>(files: &'a BTreeMap<String, Vec<u8>>, name: &str) -> &'a [u8] {
    files
        .get(name)
        .or_else(|| files.get(&format!("./{name}")))
        .unwrap_or_else(|| {
            panic!(
                "{name} not in the image: {:?}",
                files.keys().take(40).collect::<Vec<_>>()
            )
        })
}

#[test]
fn two_platforms_push_an_index_with_an_emulated_run_and_a_native_stage() {
    if !ready() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let state = tempdir();
    let ctx = context(DOCKERFILE);
    let name = format!("{}/multi:1", reg.addr);
    let out = kiln(&state)
        .args([
            "build",
            "--progress",
            "json",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-t", &name, "--push"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    let (stdout, stderr) = text(&out);
    let events = stdout + &stderr;
    ok(&out);
    // Stages are named as BuildKit names them in a multi-platform build.
    for stage in ["linux/amd64 build", "linux/arm64 stage-1"] {
        assert!(
            events.contains(&format!("\"stage\":\"{stage}\"")),
            "{stage} in {events}"
        );
    }
    let images = pull_index(&reg.addr, "multi", "1");
    let platforms: Vec<&str> = images.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (platform, config, files) in &images {
        let arm = platform == "linux/arm64";
        assert_eq!(
            config["architecture"],
            if arm { "arm64" } else { "amd64" },
            "{config}"
        );
        assert_eq!(config["os"], "linux");
        assert_eq!(
            String::from_utf8_lossy(file(files, "arch")),
            if arm { "aarch64\n" } else { "x86_64\n" }
        );
        assert_eq!(
            String::from_utf8_lossy(file(files, "note")),
            format!(
                "built on amd64 for {}\n",
                if arm { "arm64" } else { "amd64" }
            )
        );
        assert_eq!(
            String::from_utf8_lossy(file(files, "platform")),
            format!("{platform}\n")
        );
        assert_eq!(
            elf_machine(file(files, "bin/busybox")),
            if arm { 0xb7 } else { 0x3e },
            "{platform}'s busybox"
        );
    }
}

#[test]
fn an_index_as_an_oci_layout_and_one_directory_per_platform_locally() {
    if !ready() {
        return;
    }
    let state = tempdir();
    let ctx = context(DOCKERFILE);
    let out = tempdir();
    let oci = out.path().join("multi.oci.tar");
    let local = out.path().join("local");
    ok(&build(
        &state,
        ctx.path(),
        &[
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            "-o",
            &format!("type=oci,dest={},name=multi:2", oci.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    ));
    let files = common::oci::layout_files(&oci);
    let blob = |d: &str| json(&files[&format!("blobs/{}", d.replacen(':', "/", 1))]);
    let layout = json(&files["index.json"]);
    let top = &layout["manifests"].as_array().expect("manifests");
    assert_eq!(top.len(), 1, "one entry, the image index: {layout}");
    assert_eq!(
        top[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = blob(top[0]["digest"].as_str().expect("digest"));
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(archs, ["arm64", "amd64"], "the order asked for");
    for (dir, arch) in [("linux_arm64", "aarch64\n"), ("linux_amd64", "x86_64\n")] {
        let got = std::fs::read_to_string(local.join(dir).join("arch")).expect("arch");
        assert_eq!(got, arch, "{dir}");
    }
    // skopeo reads the layout's index and picks each platform from it.
    if kiln_testkit::require_tool("an_index_as_an_oci_layout", "skopeo", "skopeo") {
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", oci.display()))
            .output()
            .expect("skopeo");
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(
            json(&raw.stdout)["manifests"].as_array().map(Vec::len),
            Some(2)
        );
    }
}

#[test]
fn the_native_stage_runs_once_for_both_platforms_and_is_cached_for_one() {
    if !ready() {
        return;
    }
    let state = tempdir();
    // A random id: equal files mean one run of the step.
    let ctx = context(
        "FROM --platform=$BUILDPLATFORM 127.0.0.1:5000/busybox:multi AS build\n\
         RUN cat /proc/sys/kernel/random/uuid > /id\n\
         FROM 127.0.0.1:5000/busybox:multi\n\
         COPY --from=build /id /id\n",
    );
    let out = tempdir();
    let local = out.path().join("both");
    ok(&build(
        &state,
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    ));
    let amd = std::fs::read(local.join("linux_amd64/id")).expect("amd64 id");
    let arm = std::fs::read(local.join("linux_arm64/id")).expect("arm64 id");
    assert_eq!(amd.len(), 37, "{amd:?}");
    assert_eq!(amd, arm, "the native stage ran twice");
    let single = out.path().join("arm64");
    let stderr = ok(&build(
        &state,
        ctx.path(),
        &[
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=local,dest={}", single.display()),
        ],
    ));
    assert_eq!(std::fs::read(single.join("id")).expect("id"), arm);
    assert!(stderr.contains("Using cache"), "{stderr}");
}

#[test]
fn one_foreign_platform_builds_a_plain_image_of_that_platform() {
    if !ready() {
        return;
    }
    let state = tempdir();
    let ctx = context(
        "FROM 127.0.0.1:5000/busybox:multi\nARG TARGETVARIANT\nRUN uname -m > /arch && echo \"[$TARGETVARIANT]\" > /v\n",
    );
    let out = tempdir();
    let oci = out.path().join("arm.tar");
    ok(&build(
        &state,
        ctx.path(),
        &[
            "--platform",
            "linux/arm64/v8",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
        ],
    ));
    let (config, files) = common::oci::oci_image(&oci);
    assert_eq!(config["architecture"], "arm64");
    let layout = json(&common::oci::layout_files(&oci)["index.json"]);
    assert_eq!(
        layout["manifests"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "one platform: a plain image, no index"
    );
    assert_eq!(file(&files, "arch"), b"aarch64\n");
    assert_eq!(
        file(&files, "v"),
        b"[]\n",
        "arm64/v8 normalises to no variant"
    );
}

#[test]
fn what_cannot_be_built_fails_before_the_build_with_a_clear_message() {
    if !ready() {
        return;
    }
    let state = tempdir();
    // A base image without the platform.
    let ctx = context("FROM 127.0.0.1:5000/busybox:multi\nRUN true\n");
    let out = build(&state, ctx.path(), &["--platform", "linux/s390x"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:1"), "{stderr}");
    assert!(stderr.contains("linux/s390x"), "{stderr}");
    assert!(
        stderr.contains("linux/amd64, linux/arm64"),
        "names what it has: {stderr}"
    );
    // A docker archive cannot hold two platforms (docker's message), refused before any work.
    let out = build(
        &state,
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=docker,dest=/tmp/x.tar",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("docker exporter does not currently support exporting manifest lists"),
        "{stderr}"
    );
    assert!(!stderr.contains("[1/"), "no step started: {stderr}");
}

/// Switches a binfmt_misc handler off (`0`) or removes it (`-1`) for the test, and restores it
/// when dropped (`update-binfmts --enable`, which re-registers it from binfmt-support's record).
struct HandlerGone(&'static str);

impl HandlerGone {
    fn new(name: &'static str, how: &str) -> Option<Self> {
        std::fs::write(format!("/proc/sys/fs/binfmt_misc/{name}"), how).ok()?;
        Some(Self(name))
    }
}

impl Drop for HandlerGone {
    fn drop(&mut self) {
        let path = format!("/proc/sys/fs/binfmt_misc/{}", self.0);
        if Path::new(&path).exists() {
            let _ = std::fs::write(&path, "1");
        } else {
            let _ = Command::new("update-binfmts")
                .args(["--enable", self.0])
                .status();
        }
    }
}

#[test]
fn a_run_step_without_an_emulator_fails_naming_the_line_and_the_fix() {
    if common::not_root() {
        return;
    }
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-riscv64").exists()
        || !Path::new("/usr/sbin/update-binfmts").exists()
    {
        common::skip("needs qemu-user-static's qemu-riscv64 handler and binfmt-support");
        return;
    }
    let state = tempdir();
    let ctx = context("FROM scratch\nCOPY Dockerfile /\nRUN true\n");
    let run = || build(&state, ctx.path(), &["--platform", "linux/riscv64"]);
    let (disabled, unregistered) = {
        let Some(off) = HandlerGone::new("qemu-riscv64", "0") else {
            common::skip("cannot switch binfmt_misc handlers off here");
            return;
        };
        let disabled = run();
        drop(off);
        let gone = HandlerGone::new("qemu-riscv64", "-1").expect("unregister qemu-riscv64");
        let unregistered = run();
        drop(gone);
        (disabled, unregistered)
    };
    assert!(
        Path::new("/proc/sys/fs/binfmt_misc/qemu-riscv64").exists(),
        "the handler was not restored"
    );
    for (out, fix) in [
        (
            &disabled,
            "qemu-riscv64 (/usr/libexec/qemu-binfmt/riscv64-binfmt-P) is disabled (echo 1 > /proc/sys/fs/binfmt_misc/qemu-riscv64)",
        ),
        (
            &unregistered,
            "(apt-get install qemu-user-static binfmt-support)",
        ),
    ] {
        let (_, stderr) = text(out);
        assert!(!out.status.success());
        assert!(
            stderr
                .contains("Dockerfile:3: cannot run `RUN` steps for linux/riscv64 on this machine"),
            "{stderr}"
        );
        assert!(stderr.contains(fix), "says what to do: {stderr}");
        assert!(
            !stderr.contains("COPY Dockerfile"),
            "fails before any step: {stderr}"
        );
    }
    // Restored with its fix-binary flag: the other tests' emulation is untouched.
    let restored =
        std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-riscv64").expect("handler");
    assert!(restored.starts_with("enabled"), "{restored}");
    assert!(
        restored
            .lines()
            .any(|l| l.starts_with("flags:") && l.contains('F')),
        "{restored}"
    );
}

#[test]
fn an_exported_cache_holds_every_platforms_steps() {
    if !ready() {
        return;
    }
    let ctx = context(
        "FROM 127.0.0.1:5000/busybox:multi\n\
         RUN cat /proc/sys/kernel/random/uuid > /id && uname -m > /arch\n",
    );
    let out = tempdir();
    let cache = out.path().join("cache");
    let first = out.path().join("first");
    ok(&build(
        &tempdir(),
        ctx.path(),
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &format!("type=local,dest={}", cache.display()),
            "-o",
            &format!("type=local,dest={}", first.display()),
        ],
    ));
    // A fresh state dir importing the cache builds each platform without running its RUN.
    for (platform, dir) in [
        ("linux/arm64", "linux_arm64"),
        ("linux/amd64", "linux_amd64"),
    ] {
        let again = out.path().join(dir);
        let stderr = ok(&build(
            &tempdir(),
            ctx.path(),
            &[
                "--platform",
                platform,
                "--cache-from",
                &format!("type=local,src={}", cache.display()),
                "-o",
                &format!("type=local,dest={}", again.display()),
            ],
        ));
        assert_eq!(
            std::fs::read(again.join("id")).expect("id"),
            std::fs::read(first.join(dir).join("id")).expect("first id"),
            "{platform}'s RUN ran again:\n{stderr}"
        );
    }
}

#[test]
fn explanations_follow_each_platform_whatever_the_order_of_platform() {
    if !ready() {
        return;
    }
    let state = tempdir();
    let ctx = context("FROM 127.0.0.1:5000/busybox:multi\nCOPY f /f\nRUN cat /f\n");
    std::fs::write(ctx.path().join("f"), "one\n").expect("write");
    ok(&build(
        &state,
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64"],
    ));
    std::fs::write(ctx.path().join("f"), "two\n").expect("write");
    let stderr = ok(&build(
        &state,
        ctx.path(),
        &["--explain", "--platform", "linux/arm64,linux/amd64"],
    ));
    assert!(stderr.contains("cache miss"), "{stderr}");
    assert!(!stderr.contains("platform changed"), "{stderr}");
}

#[test]
fn the_id_a_multi_platform_build_prints_runs_and_inspects() {
    if !ready() {
        return;
    }
    let state = tempdir();
    let ctx = context("FROM 127.0.0.1:5000/busybox:multi\nRUN uname -m > /arch\n");
    let out = build(
        &state,
        ctx.path(),
        &["-q", "--platform", "linux/amd64,linux/arm64", "-t", "ids:1"],
    );
    ok(&out);
    let id = text(&out).0.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let short = &id["sha256:".len().."sha256:".len() + 12];
    for (platform, arch) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let run = kiln(&state)
            .args(["run", "--rm", "--platform", platform, short, "cat", "/arch"])
            .output()
            .expect("kiln run");
        let (stdout, stderr) = text(&run);
        assert!(run.status.success(), "{stderr}");
        assert_eq!(stdout.trim(), arch);
    }
    let inspect = kiln(&state)
        .args(["inspect", &id])
        .output()
        .expect("kiln inspect");
    assert!(inspect.status.success(), "{}", text(&inspect).1);
}
