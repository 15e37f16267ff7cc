//! `kiln build --load` and `-o type=docker` without `dest` against a real docker daemon (Debian's
//! docker.io, started here on a private socket with its own data and exec roots, no bridge and
//! no iptables), then `docker run` of the loaded image; the image's SIZE as docker shows it;
//! and the errors when no daemon answers or several platforms are asked for.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_context, kiln, tempdir, text};

/// A dockerd of our own, stopped (SIGTERM, then SIGKILL after 20 s) when dropped.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    docker: PathBuf,
}

impl Dockerd {
    /// Starts dockerd and waits (at most 60 s) until it answers; `None` after a skip.
    fn start(test: &str) -> Option<Self> {
        if !kiln_testkit::require_root(test)
            || !kiln_testkit::require_tool(test, "dockerd", "docker.io")
        {
            return None;
        }
        let dockerd = kiln_testkit::find_tool("dockerd").expect("dockerd on PATH");
        // The client shipped with this daemon, else any on PATH.
        let docker = dockerd
            .parent()
            .map(|d| d.join("docker"))
            .filter(|p| p.exists())
            .or_else(|| kiln_testkit::find_tool("docker"))
            .expect("the docker client (docker.io)");
        // Short paths: unix socket names are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new(&dockerd)
            .arg("--host")
            .arg(format!("unix://{}", dir.path().join("sock").display()))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Self { child, dir, docker };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer in 60 s:\n{}",
                std::fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        Some(d)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("sock").display())
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.docker)
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .expect("run docker")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A state directory holding `busybox:latest` built from the host's static busybox.
fn state_with_busybox() -> Option<tempfile::TempDir> {
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

fn hello_uncle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-uncle")
}

#[test]
fn build_load_streams_the_image_into_dockerd_which_runs_it() {
    let Some(dockerd) = Dockerd::start("build_load_streams_the_image_into_dockerd_which_runs_it")
    else {
        return;
    };
    let Some(state) = state_with_busybox() else {
        return;
    };
    let out = kiln(&state)
        .env("DOCKER_HOST", dockerd.host())
        .args([
            "build",
            "--progress=plain",
            "--load",
            "-t",
            "hello-uncle:loaded",
        ])
        .arg(hello_uncle())
        .output()
        .expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(e.contains("Loaded image: hello-uncle:loaded"), "{e}");
    let run = dockerd.docker(&["run", "--rm", "--network", "none", "hello-uncle:loaded"]);
    let (o, e) = text(&run);
    assert!(run.status.success(), "{e}");
    assert_eq!(o, "Bob is your uncle.\n");
    let run = dockerd.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "NAME=Sam",
        "hello-uncle:loaded",
    ]);
    assert_eq!(text(&run).0, "Sam is your uncle.\n", "{}", text(&run).1);

    // Same image id on both sides, and the SIZE docker shows (its layers, uncompressed).
    let (kiln_id, _) = text(
        &kiln(&state)
            .args(["images", "-q", "--no-trunc", "hello-uncle:loaded"])
            .output()
            .expect("run kiln"),
    );
    let (docker_id, _) =
        text(&dockerd.docker(&["image", "inspect", "-f", "{{.Id}}", "hello-uncle:loaded"]));
    assert_eq!(kiln_id.trim(), docker_id.trim());
    let (kiln_size, _) = text(
        &kiln(&state)
            .args(["images", "--format", "{{.Size}}", "hello-uncle:loaded"])
            .output()
            .expect("run kiln"),
    );
    let (docker_size, _) =
        text(&dockerd.docker(&["images", "--format", "{{.Size}}", "hello-uncle:loaded"]));
    assert_eq!(kiln_size.trim(), docker_size.trim());

    // `-o type=docker` without dest goes to the daemon too, under the output's name.
    let out = kiln(&state)
        .env("DOCKER_HOST", dockerd.host())
        .args(["build", "-q", "-o", "type=docker,name=uncle-out:v1"])
        .arg(hello_uncle())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let (id, _) = text(&dockerd.docker(&["image", "inspect", "-f", "{{.Id}}", "uncle-out:v1"]));
    assert_eq!(id.trim(), kiln_id.trim());
}

#[test]
fn load_without_a_daemon_fails_before_building() {
    let state = tempdir();
    let ctx = tempdir();
    // A build would fail on this Dockerfile: the daemon is checked first.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nRUN false\n").expect("write");
    let gone = ctx.path().join("no-daemon.sock");
    for flags in [&["--load"][..], &["-o", "type=docker"][..]] {
        let out = kiln(&state)
            .env("DOCKER_HOST", format!("unix://{}", gone.display()))
            .arg("build")
            .args(flags)
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        let (_, e) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains(&format!(
                "cannot connect to the docker daemon at unix://{}",
                gone.display()
            )) && e.contains("use `-o type=docker,dest=FILE`"),
            "{e}"
        );
        assert!(!e.contains("RUN false"), "nothing was built: {e}");
    }
    // Several platforms: refused first, in buildx's words (a docker archive holds one image).
    for flags in [
        &["--load", "--platform", "linux/amd64,linux/arm64"][..],
        &[
            "-o",
            "type=docker",
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
        ],
    ] {
        let out = kiln(&state)
            .env("DOCKER_HOST", format!("unix://{}", gone.display()))
            .arg("build")
            .args(flags)
            .arg(ctx.path())
            .output()
            .expect("run kiln");
        let (_, e) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert_eq!(
            e, "error: docker exporter does not currently support exporting manifest lists\n",
            "{flags:?}"
        );
    }
    // The same platform twice is one.
    let out = kiln(&state)
        .env("DOCKER_HOST", format!("unix://{}", gone.display()))
        .args(["build", "--load", "--platform", "linux/amd64,linux/amd64"])
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(
        text(&out).1.contains("cannot connect to the docker daemon"),
        "{}",
        text(&out).1
    );
    // With a dest, no daemon is needed (the archive is written).
    let out = kiln(&state)
        .env("DOCKER_HOST", format!("unix://{}", gone.display()))
        .args(["build", "-o"])
        .arg(format!(
            "type=docker,dest={}",
            ctx.path().join("a.tar").display()
        ))
        .arg(ctx.path())
        .output()
        .expect("run kiln");
    assert!(!text(&out).1.contains("docker daemon"), "{}", text(&out).1);
}
