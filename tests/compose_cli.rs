//! `kiln compose` end to end: a two-service file (a busybox httpd built from a context, and a
//! client that fetches from it by service name), with ports from `.env`; `config` shows the
//! resolved file, `build` builds the image, `up` answers on the published host port and prints
//! each service's lines under its name, and SIGINT leaves no process and no mount behind.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{busybox_context, kiln, tempdir, text};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Processes whose command line contains `needle`.
fn processes(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(c);
            }
        }
    }
    out
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn compose_builds_and_runs_two_services_that_talk_by_name() {
    if !kiln_testkit::require_root("compose_builds_and_runs_two_services_that_talk_by_name") {
        return;
    }
    let Some(base) = busybox_context(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    ) else {
        return;
    };
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-q", "-t", "busybox:latest"])
        .arg(base.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);

    let (host_port, app_port) = (free_port(), free_port());
    let proj = tempdir();
    std::fs::create_dir(proj.path().join("web")).expect("mkdir");
    std::fs::write(
        proj.path().join("web/Dockerfile"),
        "FROM busybox\nARG GREETING\nRUN mkdir /www && echo \"$GREETING from web\" > /www/index.html\n",
    )
    .expect("write");
    std::fs::write(
        proj.path().join(".env"),
        format!(
            "WEB_PORT={host_port}\nAPP_PORT={app_port}\nSLEEP={}\n",
            100_000 + u32::from(app_port)
        ),
    )
    .expect("write");
    std::fs::write(
        proj.path().join("compose.yaml"),
        r#"
name: uncle
services:
  web:
    build:
      context: ./web
      args:
        GREETING: ${GREETING:-hello}
    image: uncle-web:test
    command: ["httpd", "-f", "-p", "${APP_PORT}", "-h", "/www"]
    ports: ["127.0.0.1:${WEB_PORT}:${APP_PORT}"]
  client:
    image: busybox
    depends_on: [web]
    command: ["sh", "-c", "until wget -q -O - http://web:${APP_PORT}/; do sleep 0.2; done; exec sleep ${SLEEP}"]
"#,
    )
    .expect("write");
    let file = proj.path().join("compose.yaml");
    // The client's last command, unique to this run.
    let marker = format!("sleep {}", 100_000 + u32::from(app_port));
    let compose = |args: &[&str]| {
        let out = kiln(&state)
            .arg("compose")
            .arg("-f")
            .arg(&file)
            .args(args)
            .env_remove("GREETING")
            .output()
            .expect("run kiln");
        let (o, e) = text(&out);
        assert!(out.status.success(), "{args:?}: {o}{e}");
        (o, e)
    };

    let (config, _) = compose(&["config"]);
    assert!(config.starts_with("name: uncle\n"), "{config}");
    assert!(config.contains("GREETING: hello\n"), "{config}");
    assert!(
        config.contains(&format!("published: '{host_port}'")),
        "{config}"
    );
    assert!(config.contains(&format!("target: {app_port}")), "{config}");
    assert!(
        config.contains(&format!("context: {}", proj.path().join("./web").display())),
        "{config}"
    );
    assert_eq!(compose(&["config", "--services"]).0, "web\nclient\n");

    let (_, built) = compose(&["build"]);
    assert!(built.contains("web | "), "{built}");
    let (o, _) = text(
        &kiln(&state)
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .expect("run kiln"),
    );
    assert!(o.lines().any(|l| l == "uncle-web:test"), "{o}");

    let mut up = kiln(&state)
        .arg("compose")
        .arg("-f")
        .arg(&file)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start compose up");
    // A failing assertion must not leave compose (and its services) running.
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
        }
    }
    let _stop = Stop(up.id());
    let stdout = up.stdout.take().expect("stdout");
    let stderr = up.stderr.take().expect("stderr");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "client | hello from web") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = up.kill();
                let _ = up.wait();
                panic!(
                    "no answer from web in 60 s: {seen:?}\n{}",
                    err_thread.join().unwrap_or_default()
                );
            }
        }
    }
    // The host port answers too.
    let mut answer = String::new();
    let mut conn =
        std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("connect to the host port");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.ends_with("hello from web\n"), "{answer}");
    assert!(!processes(&marker).is_empty(), "the client runs");

    // SIGINT stops everything.
    let pid = rustix::process::Pid::from_child(&up);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("compose up still runs 30 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = err_thread.join().unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{err}");
    let left = processes(&marker);
    assert!(left.is_empty(), "{left:?} {err}");
    assert!(
        processes(&format!("-p {app_port}")).is_empty(),
        "httpd left: {err}"
    );
    assert!(mounts_below(state.path()).is_empty(), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err(),
        "the host port is closed"
    );
}

#[test]
fn compose_errors_name_the_file_and_variable() {
    let proj = tempdir();
    let file = proj.path().join("compose.yaml");
    std::fs::write(&file, "services:\n  a:\n    image: ${NEED:?set NEED}\n").expect("write");
    let state = tempdir();
    let out = kiln(&state)
        .arg("compose")
        .arg("-f")
        .arg(&file)
        .arg("config")
        .env_remove("NEED")
        .output()
        .expect("run kiln");
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!(
            "{}.services.a.image: required variable NEED is missing a value: set NEED",
            file.display()
        )),
        "{e}"
    );
    let out = kiln(&state)
        .arg("compose")
        .arg("-f")
        .arg(&file)
        .arg("config")
        .env("NEED", "busybox")
        .output()
        .expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{e}");
    assert!(o.contains("image: busybox\n"), "{o}");
}

#[test]
fn compose_build_runs_a_shared_step_once_and_reads_inline_dockerfiles() {
    if !kiln_testkit::require_root(
        "compose_build_runs_a_shared_step_once_and_reads_inline_dockerfiles",
    ) {
        return;
    }
    let Some(base) = busybox_context(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    ) else {
        return;
    };
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-q", "-t", "busybox:latest"])
        .arg(base.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    let proj = tempdir();
    // Both services start with the same slow step; they build in parallel.
    let shared = "FROM busybox\\nRUN sleep 1 && date +%s%N > /stamp\\n";
    std::fs::write(
        proj.path().join("compose.yaml"),
        format!(
            "services:\n  a:\n    build:\n      context: .\n      dockerfile_inline: \"{shared}RUN echo a > /who\\n\"\n  \
             b:\n    build:\n      context: .\n      dockerfile_inline: \"{shared}RUN echo b > /who\\n\"\n    image: b:v1\n"
        ),
    )
    .expect("write");
    let out = kiln(&state)
        .arg("compose")
        .arg("-f")
        .arg(proj.path().join("compose.yaml"))
        .arg("build")
        .output()
        .expect("run kiln");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    let project = proj
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_lowercase()
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "",
        );
    let cat = |image: &str, file: &str| {
        let out = kiln(&state)
            .args(["run", "--network", "none", image, "cat", file])
            .output()
            .expect("run kiln");
        assert!(out.status.success(), "{image}: {}", text(&out).1);
        text(&out).0
    };
    let a = format!("{project}-a");
    assert_eq!(cat(&a, "/who"), "a\n");
    assert_eq!(cat("b:v1", "/who"), "b\n");
    assert_eq!(
        cat(&a, "/stamp"),
        cat("b:v1", "/stamp"),
        "the shared step ran twice: {e}"
    );
}
