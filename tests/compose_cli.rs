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

/// A state directory holding `busybox:latest` built from the host's static busybox.
fn busybox_state() -> Option<tempfile::TempDir> {
    let base = busybox_context(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )?;
    let state = tempdir();
    let out = kiln(&state)
        .args(["build", "-q", "-t", "busybox:latest"])
        .arg(base.path())
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out).1);
    Some(state)
}

/// Network namespaces and links compose up `pid` made that still exist.
fn network_left(pid: u32) -> Vec<String> {
    let mut left = Vec::new();
    for dir in ["/run/netns", "/sys/class/net"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("kiln-{pid}-"))
                || n == format!("kbr-{pid}")
                || n.starts_with(&format!("kv{pid}-"))
            {
                left.push(format!("{dir}/{n}"));
            }
        }
    }
    left
}

/// `compose up` of `file` in the background: its stdout lines on a channel, stderr collected.
struct Up {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    err: Option<std::thread::JoinHandle<String>>,
    so_far: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Up {
    fn start(state: &tempfile::TempDir, file: &Path) -> Up {
        let mut child = kiln(state)
            .arg("compose")
            .arg("-f")
            .arg(file)
            .arg("up")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start compose up");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let so_far: std::sync::Arc<std::sync::Mutex<String>> = std::sync::Arc::default();
        let sink = so_far.clone();
        let err = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
            sink.lock().map(|s| s.clone()).unwrap_or_default()
        });
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
            err: Some(err),
            so_far,
        }
    }

    /// Waits for the stdout line `want` (60 s at most).
    fn wait_line(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen.iter().any(|l| l == want) {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.seen.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let err = self.err.take().map(|t| t.join().unwrap_or_default());
                    panic!("no {want:?} in 60 s: {:?}\n{err:?}", self.seen);
                }
            }
        }
    }

    /// Waits for compose to exit (30 s at most): its code and stderr.
    fn finish(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("compose up still runs after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.seen.extend(self.lines.try_iter());
        let err = self
            .err
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (status.code(), err)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }
}

#[test]
fn compose_services_have_own_network_conditions_and_named_volumes() {
    let test = "compose_services_have_own_network_conditions_and_named_volumes";
    if !kiln_testkit::require_root(test) || !kiln_testkit::require_tool(test, "ip", "iproute2") {
        return;
    }
    let Some(state) = busybox_state() else {
        return;
    };
    let host_port = free_port();
    let proj = tempdir();
    let sleep = format!("sleep {}", 200_000 + u32::from(host_port));
    // `init` fills the named volume and must complete before `one` starts; `one` and `two`
    // both listen on port 80 in their own namespaces; `client` waits for `one` to be healthy
    // (its healthcheck fails until a file appears, so it takes a few probes) and fetches from
    // both by name.
    let yaml = format!(
        r#"
name: nets
services:
  init:
    image: busybox
    command: ["sh", "-c", "echo one > /data/index.html"]
    volumes: ["www:/data"]
  one:
    image: busybox
    depends_on: {{init: {{condition: service_completed_successfully}}}}
    command: ["sh", "-c", "(sleep 1; touch /www/ready) & exec httpd -f -p 80 -h /www"]
    volumes: ["www:/www"]
    ports: ["127.0.0.1:{host_port}:80"]
    healthcheck:
      test: ["CMD-SHELL", "test -e /www/ready && wget -q -O /dev/null http://127.0.0.1:80/"]
      interval: 300ms
      retries: 30
  two:
    image: busybox
    command: ["sh", "-c", "mkdir /w && echo two > /w/index.html && exec httpd -f -p 80 -h /w"]
    ports: ["127.0.0.1::80"]
  client:
    image: busybox
    depends_on:
      one: {{condition: service_healthy}}
      two: {{condition: service_started}}
    command: ["sh", "-c", "until wget -q -O - http://two/; do sleep 0.2; done; wget -q -O - http://one:80/; wget -q -O - http://nets-one-1/; grep -cE '[[:space:]]one$' /etc/hosts; exec {sleep}"]
volumes:
  www: {{}}
"#
    );
    std::fs::write(proj.path().join("compose.yaml"), yaml).expect("write");
    let file = proj.path().join("compose.yaml");
    let mut up = Up::start(&state, &file);
    up.wait_line("client | two");
    up.wait_line("client | one");
    up.wait_line("client | 1");
    let lines = up.seen.clone();
    let n = |l: &str| lines.iter().filter(|x| *x == l).count();
    assert_eq!(
        n("client | one"),
        2,
        "by service and container name: {lines:?}"
    );
    // The host port reaches `one` on its own address.
    let mut answer = String::new();
    let mut conn =
        std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("connect to the host port");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.ends_with("\r\n\r\none\n"), "{answer}");
    // `two`'s port went to an ephemeral host port, shown as `docker compose port` shows it.
    let err = up.so_far.lock().map(|s| s.clone()).unwrap_or_default();
    let port: u16 = err
        .lines()
        .find_map(|l| l.strip_prefix("nets-two-1 80/tcp -> 127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port of two: {err}"));
    let mut answer = String::new();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to two");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.ends_with("\r\n\r\ntwo\n"), "{answer}");
    let pid = up.child.id();
    assert_eq!(network_left(pid).len(), 1 + 4, "{:?}", network_left(pid));
    assert_eq!(
        std::fs::read_to_string(state.path().join("volumes/nets_www/_data/index.html"))
            .expect("the volume's file"),
        "one\n"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&up.child),
        rustix::process::Signal::INT,
    )
    .expect("SIGINT");
    let (code, err) = up.finish();
    assert_eq!(code, Some(130), "{err}");
    // `init` exited before `one` started; `client` started after `one` was healthy.
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("no {s:?} in {err}"));
    assert!(
        at("init exited with code 0") < at("Starting nets-one-1"),
        "{err}"
    );
    assert!(processes(&sleep).is_empty(), "{err}");
    assert!(processes("-h /www").is_empty(), "{err}");
    assert!(processes("/w/index.html").is_empty(), "{err}");
    assert!(mounts_below(state.path()).is_empty(), "{err}");
    assert_eq!(network_left(pid), Vec::<String>::new(), "{err}");

    // `down -v` removes the named volume.
    let out = kiln(&state)
        .arg("compose")
        .arg("-f")
        .arg(&file)
        .args(["down", "-v"])
        .output()
        .expect("run kiln");
    let (_, e) = text(&out);
    assert!(out.status.success(), "{e}");
    assert_eq!(e, "Volume nets_www Removed\n");
    assert!(!state.path().join("volumes/nets_www").exists());
}

#[test]
fn compose_up_stops_when_a_dependency_fails_its_condition() {
    let test = "compose_up_stops_when_a_dependency_fails_its_condition";
    if !kiln_testkit::require_root(test) || !kiln_testkit::require_tool(test, "ip", "iproute2") {
        return;
    }
    let Some(state) = busybox_state() else {
        return;
    };
    let proj = tempdir();
    for (name, yaml, want) in [
        (
            "failed",
            "services:\n  job: {image: busybox, command: [sh, -c, 'exit 3']}\n  app:\n    image: busybox\n    command: [echo, never]\n    depends_on: {job: {condition: service_completed_successfully}}\n",
            "error: service \"job\" didn't complete successfully: exit 3\n",
        ),
        (
            "sick",
            // The image's HEALTHCHECK (the file gives only its interval).
            "services:\n  db:\n    build: {context: ., dockerfile_inline: \"FROM busybox\\nHEALTHCHECK --interval=30s --retries=2 CMD false\\n\"}\n    command: [sleep, 'SLEEP']\n    healthcheck: {interval: 100ms}\n  app:\n    image: busybox\n    command: [echo, never]\n    depends_on: {db: {condition: service_healthy}}\n",
            "error: dependency failed to start: container sick-db-1 is unhealthy\n",
        ),
    ] {
        let file = proj.path().join(format!("{name}.yaml"));
        // A sleep no other process on the machine runs.
        let sleep = (300_000 + u32::from(free_port())).to_string();
        let yaml = yaml.replace("SLEEP", &sleep);
        std::fs::write(&file, format!("name: {name}\n{yaml}")).expect("write");
        let mut up = Up::start(&state, &file);
        let pid = up.child.id();
        let (code, err) = up.finish();
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.ends_with(want), "{name}: {err}");
        assert!(!err.contains(&format!("Starting {name}-app-1")), "{err}");
        assert!(
            !up.seen.iter().any(|l| l.contains("never")),
            "{:?}",
            up.seen
        );
        assert_eq!(network_left(pid), Vec::<String>::new(), "{name}");
        assert!(
            processes(&format!("sleep {sleep}")).is_empty(),
            "{name}: {err}"
        );
    }
    assert!(mounts_below(state.path()).is_empty());
}

#[test]
fn a_killed_compose_up_leaves_no_service_and_the_next_up_sweeps_its_network() {
    let test = "a_killed_compose_up_leaves_no_service_and_the_next_up_sweeps_its_network";
    if !kiln_testkit::require_root(test) || !kiln_testkit::require_tool(test, "ip", "iproute2") {
        return;
    }
    let Some(state) = busybox_state() else {
        return;
    };
    let proj = tempdir();
    let port = free_port();
    let marker = format!("-p {port} -h /");
    let file = proj.path().join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            "name: killed\nservices:\n  a:\n    image: busybox\n    command: [sh, -c, 'echo up; exec httpd -f {marker}']\n"
        ),
    )
    .expect("write");
    let mut up = Up::start(&state, &file);
    up.wait_line("a | up");
    let pid = up.child.id();
    assert!(!processes(&marker).is_empty());
    // SIGKILL: compose stops nothing itself; its children's parent-death signal must.
    up.child.kill().expect("SIGKILL");
    let _ = up.child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the service outlived compose: {:?}",
            processes(&marker)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!network_left(pid).is_empty(), "nothing to sweep?");
    // The next up removes what the dead one left on the network.
    std::fs::write(
        &file,
        "name: killed\nservices:\n  a:\n    image: busybox\n    command: ['true']\n",
    )
    .expect("write");
    let mut next = Up::start(&state, &file);
    let (code, err) = next.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(network_left(pid), Vec::<String>::new());
    assert_eq!(network_left(next.child.id()), Vec::<String>::new());
    assert!(mounts_below(state.path()).is_empty());
}
