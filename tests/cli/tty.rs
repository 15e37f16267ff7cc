//! The live tty display against real pseudo-terminals: `kiln build` with its stderr on a pty
//! (openpty, read back and replayed through a small terminal model), and inside tmux, whose
//! screen we capture. Both check the final screen, not bytes.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::screen::Screen;
use common::{busybox_context, hello_context, is_root, kiln, openpty, skip, tempdir};

/// Runs `cmd` with stderr on a fresh pty of `cols` columns; returns (exit code, everything
/// written to the terminal, stdout).
fn run_on_pty(mut cmd: Command, cols: u16, rows: u16) -> (Option<i32>, String, Vec<u8>) {
    let (master, slave) = openpty(cols, rows);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn kiln");
    // The parent's copy of the slave went into the Command and is closed once spawned, so the
    // master reads EOF (EIO) when kiln exits.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        all
    });
    let out = child.wait_with_output().expect("wait kiln");
    let written = reader.join().expect("reader");
    (
        out.status.code(),
        String::from_utf8_lossy(&written).into_owned(),
        out.stdout,
    )
}

#[test]
fn auto_progress_on_a_terminal_is_the_live_display() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let mut cmd = kiln(&state);
    cmd.args(["build", "-t", "hello:tty"]).arg(hello_context());
    let (code, written, stdout) = run_on_pty(cmd, 72, 20);
    assert_eq!(code, Some(0), "{written}");
    assert!(stdout.is_empty());
    assert!(
        written.contains("\x1b[?25l") && written.contains("\x1b[K"),
        "redrawn in place: {written:?}"
    );
    assert!(
        !written.contains("\x1b[3"),
        "NO_COLOR is honoured: {written:?}"
    );
    let mut screen = Screen::new(72);
    screen.feed(&written);
    let text = screen.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.last().unwrap().starts_with("[+] Building ") && text.ends_with(") FINISHED"),
        "{text}"
    );
    let copy = lines
        .iter()
        .find(|l| l.contains("COPY hello.txt /hello.txt"))
        .expect("COPY line");
    assert!(
        copy.starts_with(" => [") && copy.contains(" DONE "),
        "{text}"
    );
    assert!(text.contains("\n => writing image sha256:"), "{text}");
    assert!(text.contains("\n => naming to hello:tty\n"), "{text}");
    for l in &lines {
        assert!(
            l.chars().count() < 72,
            "no line reaches the last column: {l:?}"
        );
    }
    // Each step is on the final screen exactly once (no leftovers of earlier frames).
    let steps = lines.iter().filter(|l| l.starts_with(" => [")).count();
    let again = kiln(&state)
        .args(["build", "--progress=json"])
        .arg(hello_context())
        .output()
        .unwrap();
    let total = String::from_utf8_lossy(&again.stderr)
        .lines()
        .filter(|l| l.contains("\"step_started\""))
        .count();
    assert_eq!(steps, total, "{text}");

    // Rebuilt: every step CACHED; with colors when NO_COLOR is unset.
    let mut cmd = kiln(&state);
    cmd.env_remove("NO_COLOR")
        .args(["build", "-t", "hello:tty"])
        .arg(hello_context());
    let (code, written, _) = run_on_pty(cmd, 72, 20);
    assert_eq!(code, Some(0));
    assert!(
        written.contains("\x1b[34m => ["),
        "colors on a terminal: {written:?}"
    );
    let mut screen = Screen::new(72);
    screen.feed(&written);
    let text = screen.text();
    assert!(
        text.lines()
            .filter(|l| l.starts_with(" => ["))
            .all(|l| l.ends_with("CACHED")),
        "{text}"
    );
}

#[test]
fn a_narrow_terminal_keeps_every_line_within_its_width() {
    if common::not_root() {
        return;
    }
    let state = tempdir();
    let mut cmd = kiln(&state);
    cmd.args(["build", "-t", "hello:narrow"])
        .arg(hello_context());
    let (code, written, _) = run_on_pty(cmd, 28, 10);
    assert_eq!(code, Some(0), "{written}");
    let mut screen = Screen::new(28);
    screen.feed(&written);
    let text = screen.text();
    for l in text.lines() {
        assert!(l.chars().count() < 28, "{l:?} in\n{text}");
    }
    assert!(
        text.lines().any(|l| l.contains('…')),
        "long lines are cut with an ellipsis:\n{text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with("[+] Building"),
        "{text}"
    );
}

#[test]
fn a_failing_build_on_a_terminal_prints_everything() {
    if !is_root() && skip("RUN steps need root") {
        return;
    }
    let df = "FROM scratch\nCOPY busybox /busybox\nRUN [\"/busybox\", \"sh\", \"-c\", \"for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; exit 7\"]\n";
    let Some(ctx) = busybox_context(df) else {
        return;
    };
    let state = tempdir();
    let mut cmd = kiln(&state);
    cmd.arg("build").arg(ctx.path());
    let (code, written, _) = run_on_pty(cmd, 100, 30);
    assert_eq!(code, Some(1), "{written}");
    let mut screen = Screen::new(100);
    screen.feed(&written);
    let text = screen.text();
    assert!(
        text.contains("ERROR\n[+] Building ") && text.contains(" FAILED\n------\n > [2/2] RUN"),
        "{text}"
    );
    for i in 1..=12 {
        assert!(
            text.contains(&format!(" line {i}\n")),
            "all output, line {i}:\n{text}"
        );
    }
    assert!(text.contains("   3 | >>> RUN [\"/busybox\""), "{text}");
    assert!(
        text.lines().last().unwrap().contains("exit code: 7"),
        "{text}"
    );
}

#[test]
fn final_screen_in_tmux() {
    if common::not_root() {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        skip("tmux is not installed");
        return;
    }
    let state = tempdir();
    let socket = format!("kiln-test-{}", std::process::id());
    let script = format!(
        "NO_COLOR=1 KILN_ROOT='{}' '{}' build -t hello:tmux '{}'; echo EXIT=$?; sleep 60",
        state.path().display(),
        env!("CARGO_BIN_EXE_kiln"),
        hello_context().display()
    );
    let started = Command::new("tmux")
        .args([
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "64",
            "-y",
            "16",
            "sh",
            "-c",
            &script,
        ])
        .status()
        .expect("tmux");
    assert!(started.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut screen = String::new();
    while Instant::now() < deadline {
        let out = Command::new("tmux")
            .args(["-L", &socket, "capture-pane", "-p"])
            .output()
            .expect("capture");
        screen = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        if screen.contains("EXIT=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .status();
    assert!(screen.ends_with("EXIT=0"), "{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let summary = lines[lines.len() - 2];
    assert!(
        summary.starts_with("[+] Building ") && summary.ends_with(" FINISHED"),
        "{screen}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" => [") && l.contains("COPY hello.txt") && l.contains("DONE")),
        "{screen}"
    );
    assert!(
        !screen.contains('⠋') && !screen.contains('⠙'),
        "no spinner left behind:\n{screen}"
    );
}
