//! `--progress=tty`: the live display, in BuildKit's style. Finished steps are printed once,
//! in start order, above a small live region that is redrawn in place (cursor up, overwrite
//! each line, clear the rest: one `write` per frame, so it does not flicker). The live region
//! holds the running steps with a spinner, their elapsed time and the last lines of their
//! output, and a summary line (`[+] Building 3.2s (4/7)`). Every line is cut to the terminal's
//! width, which is read again on every frame, so narrow and resized terminals keep a clean
//! screen; the region never grows taller than the terminal. When the build fails, the failing
//! step's whole output and the Dockerfile excerpt are printed below the final frame.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln::{Progress, ProgressEvent};

use super::report::{DockerfileSource, build_error_report, step_report};
use super::{Clock, Renderer, Sink, StepInfo, StepStatus, StepTable, lock};

mod frame;

use frame::frame;

/// How often the display refreshes on its own (spinner, elapsed times).
const TICK: Duration = Duration::from_millis(100);
/// Output lines shown under a running step, at most.
const LOG_TAIL: usize = 6;
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Returns (columns, rows) of the terminal.
pub(crate) type SizeFn = Box<dyn Fn() -> (usize, usize) + Send + Sync>;

struct State {
    table: StepTable,
    out: Sink,
    /// Steps (a prefix of `table.steps`) already printed above the live region.
    committed: usize,
    /// Visible widths of the live region's lines as last drawn.
    drawn: Vec<usize>,
    /// Terminal width at the last frame.
    width: usize,
    /// `--explain`: a step that ran is followed by why it missed the cache.
    explain: bool,
}

/// The tty renderer.
pub(crate) struct Tty {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    source: Option<Arc<DockerfileSource>>,
    color: bool,
    size: Arc<SizeFn>,
    ticker: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

/// The size of the terminal on stderr, 80x24 when it cannot be read.
fn stderr_size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => {
            (usize::from(ws.ws_col), usize::from(ws.ws_row))
        }
        _ => (80, 24),
    }
}

impl Tty {
    /// A renderer drawing to `out` with the given terminal size, refreshed only on events and
    /// [`Tty::draw`] (no background thread).
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        clock: Arc<dyn Clock>,
        source: Option<Arc<DockerfileSource>>,
        color: bool,
        size: SizeFn,
    ) -> Self {
        let state = State {
            table: StepTable::default(),
            out: Sink(out),
            committed: 0,
            drawn: Vec::new(),
            width: 0,
            explain: false,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
            source,
            color,
            size: Arc::new(size),
            ticker: Mutex::new(None),
        }
    }

    /// A renderer on the real terminal (stderr), redrawn every [`TICK`] by a background thread.
    pub(crate) fn live(
        out: Box<dyn Write + Send>,
        clock: Arc<dyn Clock>,
        source: Option<Arc<DockerfileSource>>,
        color: bool,
    ) -> Self {
        let tty = Self::new(out, clock, source, color, Box::new(stderr_size));
        let (stop, rx) = mpsc::channel::<()>();
        let (state, clock, size) = (tty.state.clone(), tty.clock.clone(), tty.size.clone());
        let handle = std::thread::Builder::new()
            .name("kiln-progress".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    let mut st = lock(&state);
                    frame(&mut st, clock.now(), size(), color, false);
                }
            });
        if let Ok(handle) = handle {
            *lock(&tty.ticker) = Some((stop, handle));
        }
        tty
    }

    /// Prints `text` (whole lines) above the live region and redraws the region below it.
    fn insert_above(state: &Mutex<State>, text: &str, frame_of: &dyn Fn(&mut State)) {
        let mut st = lock(state);
        let width = st.width.max(10);
        let up: usize = st
            .drawn
            .iter()
            .map(|&w| if w > width { w.div_ceil(width) } else { 1 })
            .sum();
        let mut buf = String::new();
        if up > 0 {
            let _ = write!(buf, "\r\x1b[{up}A");
        }
        buf.push_str("\x1b[J");
        buf.push_str(text);
        if !text.ends_with('\n') {
            buf.push('\n');
        }
        let _ = st.out.0.write_all(buf.as_bytes());
        st.drawn.clear();
        frame_of(&mut st);
    }

    /// With `on`, each committed step that ran is followed by why it missed the cache.
    pub(crate) fn with_explain(self, on: bool) -> Self {
        lock(&self.state).explain = on;
        self
    }

    /// Redraws the live region now.
    #[cfg(test)]
    pub(crate) fn draw(&self) {
        let mut st = lock(&self.state);
        frame(&mut st, self.clock.now(), (self.size)(), self.color, false);
    }
}

impl Progress for Tty {
    fn event(&self, event: &ProgressEvent) {
        let now = self.clock.now();
        let mut st = lock(&self.state);
        st.table.apply(event, now);
        // State changes show at once; log lines wait for the next tick (cheap for chatty steps).
        if !matches!(
            event,
            ProgressEvent::StepLog { .. } | ProgressEvent::BuildStarted { .. }
        ) {
            frame(&mut st, now, (self.size)(), self.color, false);
        }
    }
}

impl Renderer for Tty {
    fn diagnostics(&self) -> Option<super::diag::Hook> {
        let (state, clock, size, color) = (
            self.state.clone(),
            self.clock.clone(),
            self.size.clone(),
            self.color,
        );
        Some(Box::new(move |text| {
            Tty::insert_above(&state, text, &|st| {
                frame(st, clock.now(), size(), color, false);
            });
        }))
    }

    fn as_progress(&self) -> &dyn Progress {
        self
    }
    fn finish(&self, error: Option<&kiln::Error>) {
        if let Some((stop, handle)) = lock(&self.ticker).take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // An error before the first event (a syntax error) gets no empty progress frame.
        if !st.table.steps.is_empty() || st.table.finished.is_some() {
            frame(st, self.clock.now(), (self.size)(), self.color, true);
        }
        let mut tail = String::new();
        for w in &st.table.warnings {
            if self.color {
                let _ = writeln!(tail, "\x1b[33mwarning:\x1b[0m {w}");
            } else {
                let _ = writeln!(tail, "warning: {w}");
            }
        }
        if let Some(e) = error {
            let failed = st.table.failed.map(|p| &st.table.steps[p]);
            match failed {
                Some(
                    step @ StepInfo {
                        status: StepStatus::Failed(msg),
                        ..
                    },
                ) => {
                    tail.push_str(&step_report(
                        step,
                        msg,
                        self.source.as_deref(),
                        true,
                        self.color,
                    ));
                }
                _ => tail.push_str(&build_error_report(e, self.source.as_deref(), self.color)),
            }
        }
        st.out.emit(&tail);
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if let Some((stop, handle)) = lock(&self.ticker).take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
    }
}

/// The VT100 subset the binary-driven tests replay the renderer's output with, shared with them.
#[cfg(test)]
#[path = "../../../tests/common/screen.rs"]
mod screen;

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use kiln::StepId;

    use super::*;
    use crate::cli::progress::testing::{Buffer, DOCKERFILE, ManualClock, done, log, started};

    use super::frame::printable;
    use super::screen::Screen;

    fn tty(cols: usize, rows: usize, color: bool) -> (Tty, Buffer, Arc<ManualClock>) {
        let buf = Buffer::default();
        let clock = Arc::new(ManualClock::default());
        let source = DockerfileSource {
            name: "Dockerfile".into(),
            text: DOCKERFILE.into(),
        };
        let t = Tty::new(
            Box::new(buf.clone()),
            clock.clone(),
            Some(Arc::new(source)),
            color,
            Box::new(move || (cols, rows)),
        );
        (t, buf, clock)
    }

    fn screen(buf: &Buffer, width: usize) -> String {
        let mut s = Screen::new(width);
        s.feed(&buf.text());
        s.text()
    }

    #[test]
    fn the_first_frame_is_exact() {
        let (t, buf, _) = tty(40, 10, false);
        t.event(&ProgressEvent::BuildStarted { total_steps: 3 });
        t.event(&started(0, 1, "FROM scratch", 1));
        assert_eq!(
            buf.text(),
            "\x1b[?25l\x1b[J ⠋ [1/3] FROM scratch              0.0s\x1b[K\n[+] Building 0.0s (0/3)\x1b[K\n\x1b[J\x1b[?25h"
        );
    }

    #[test]
    fn running_steps_show_spinner_time_and_last_lines() {
        let (t, buf, clock) = tty(50, 20, false);
        t.event(&ProgressEvent::BuildStarted { total_steps: 3 });
        t.event(&started(0, 1, "FROM scratch", 1));
        t.event(&ProgressEvent::StepCached { step: StepId(0) });
        t.event(&started(1, 2, "RUN make", 2));
        for i in 0..8 {
            t.event(&log(1, &format!("compiling {i}")));
        }
        clock.set_ms(1250);
        t.draw();
        assert_eq!(
            screen(&buf, 50),
            " => [1/3] FROM scratch                     CACHED\n \
             ⠹ [2/3] RUN make                            1.2s\n   \
             compiling 2\n   compiling 3\n   compiling 4\n   compiling 5\n   compiling 6\n   compiling 7\n\
             [+] Building 1.2s (1/3)"
        );
        clock.set_ms(1600);
        t.event(&done(1, 1600));
        assert_eq!(
            screen(&buf, 50),
            " => [1/3] FROM scratch                     CACHED\n => [2/3] RUN make                      DONE 1.6s\n[+] Building 1.6s (2/3)"
        );
    }

    #[test]
    fn explain_shows_why_a_step_ran_under_its_line() {
        for on in [true, false] {
            let (t, buf, clock) = tty(60, 20, false);
            let t = t.with_explain(on);
            t.event(&ProgressEvent::BuildStarted { total_steps: 2 });
            t.event(&started(0, 1, "FROM scratch", 1));
            t.event(&ProgressEvent::StepCached { step: StepId(0) });
            let mut run = started(1, 2, "RUN echo hi", 3);
            if let ProgressEvent::StepStarted { reason, .. } = &mut run {
                *reason = Some("build arg or env V changed: \"1\" -> \"2\"".into());
            }
            t.event(&run);
            clock.set_ms(400);
            t.event(&done(1, 400));
            t.event(&ProgressEvent::BuildFinished {
                success: true,
                elapsed: Duration::from_millis(400),
            });
            t.finish(None);
            let why = if on {
                "   cache miss: build arg or env V changed: \"1\" -> \"2\"\n"
            } else {
                ""
            };
            assert_eq!(
                screen(&buf, 60),
                format!(
                    " => [1/3] FROM scratch                               CACHED\n \
                     => [2/3] RUN echo hi                             DONE 0.4s\n\
                     {why}[+] Building 0.4s (2/3) FINISHED"
                )
            );
        }
    }

    #[test]
    fn final_screen_of_a_successful_build() {
        let (t, buf, clock) = tty(60, 20, false);
        t.event(&ProgressEvent::BuildStarted { total_steps: 3 });
        t.event(&started(0, 1, "FROM scratch", 1));
        t.event(&ProgressEvent::StepCached { step: StepId(0) });
        t.event(&started(1, 2, "COPY hello.txt /", 2));
        t.event(&started(2, 3, "RUN echo hi", 3));
        t.event(&log(2, "hi"));
        clock.set_ms(400);
        t.event(&done(2, 400));
        clock.set_ms(500);
        t.event(&done(1, 500));
        t.event(&ProgressEvent::ImageWritten {
            manifest_digest: "sha256:m".into(),
            config_digest: "sha256:c0ffee".into(),
            names: vec!["docker.io/library/hello:latest".into()],
        });
        t.event(&ProgressEvent::BuildFinished {
            success: true,
            elapsed: Duration::from_millis(520),
        });
        t.finish(None);
        assert_eq!(
            screen(&buf, 60),
            " => [1/3] FROM scratch                               CACHED\n \
             => [2/3] COPY hello.txt /                        DONE 0.5s\n \
             => [3/3] RUN echo hi                             DONE 0.4s\n \
             => writing image sha256:c0ffee\n => naming to hello:latest\n\
             [+] Building 0.5s (3/3) FINISHED"
        );
    }

    #[test]
    fn a_failure_prints_the_whole_output_and_the_excerpt() {
        let (t, buf, clock) = tty(60, 8, false);
        t.event(&started(2, 3, "RUN echo hi && false", 3));
        for i in 0..20 {
            t.event(&log(2, &format!("line {i}")));
        }
        clock.set_ms(300);
        t.event(&ProgressEvent::StepFailed {
            step: StepId(2),
            error: "exit code: 1".into(),
        });
        t.event(&ProgressEvent::BuildFinished {
            success: false,
            elapsed: Duration::from_millis(300),
        });
        t.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "exit code: 1".into(),
        }));
        let s = screen(&buf, 60);
        assert!(s.starts_with(" => [3/3] RUN echo hi && false                        ERROR\n[+] Building 0.3s (1/3) FAILED\n------\n > [3/3] RUN echo hi && false:\n0.000 line 0\n"), "{s}");
        assert!(s.contains("0.000 line 19\n------\nDockerfile:3\n"), "{s}");
        assert!(
            s.contains("   3 | >>> RUN echo hi && \\\n   4 | >>>     false\n"),
            "{s}"
        );
        assert!(
            s.ends_with("--------------------\nerror: exit code: 1"),
            "{s}"
        );
    }

    #[test]
    fn steps_still_running_when_the_build_fails_are_canceled() {
        let (t, buf, clock) = tty(50, 20, false);
        t.event(&started(1, 2, "RUN sleep 100", 2));
        t.event(&started(2, 3, "RUN false", 3));
        clock.set_ms(700);
        t.event(&ProgressEvent::StepFailed {
            step: StepId(2),
            error: "exit code: 1".into(),
        });
        t.event(&ProgressEvent::BuildFinished {
            success: false,
            elapsed: Duration::from_millis(700),
        });
        t.finish(Some(&kiln::Error::Plan {
            line: 0,
            message: "exit code: 1".into(),
        }));
        let s = screen(&buf, 50);
        assert!(
            s.starts_with(" => [2/3] RUN sleep 100                  CANCELED\n => [3/3] RUN false                         ERROR\n"),
            "{s}"
        );
    }

    #[test]
    fn narrow_terminals_cut_lines_and_never_wrap() {
        let (t, buf, clock) = tty(24, 10, false);
        t.event(&started(
            0,
            1,
            "RUN a-very-long-command --with many --flags",
            1,
        ));
        t.event(&log(
            0,
            "an output line that is much longer than the terminal",
        ));
        clock.set_ms(2000);
        t.draw();
        let s = screen(&buf, 24);
        assert_eq!(
            s,
            " ⠋ [1/3] RUN a-ve… 2.0s\n   an output line that…\n[+] Building 2.0s (0/3)"
        );
        for l in s.lines() {
            assert!(l.chars().count() < 24, "{l:?}");
        }
    }

    #[test]
    fn resizing_narrower_redraws_cleanly() {
        let width = Arc::new(std::sync::atomic::AtomicUsize::new(60));
        let w = width.clone();
        let buf = Buffer::default();
        let clock = Arc::new(ManualClock::default());
        let t = Tty::new(
            Box::new(buf.clone()),
            clock.clone(),
            None,
            false,
            Box::new(move || (w.load(std::sync::atomic::Ordering::SeqCst), 20)),
        );
        t.event(&started(0, 1, "RUN sleep 10", 1));
        t.event(&started(1, 2, "RUN sleep 20", 2));
        width.store(30, std::sync::atomic::Ordering::SeqCst);
        clock.set_ms(1000);
        t.draw();
        // A reflowing terminal re-wraps the old 59-column lines into two rows each; replay the
        // first frame at 60 columns, then what followed at 30.
        let text = buf.text();
        let second = text
            .match_indices("\x1b[?25l")
            .nth(2)
            .map(|(i, _)| i)
            .unwrap();
        let mut reflowed = String::new();
        let mut s = Screen::new(60);
        s.feed(&text[..second]);
        for l in s.text().lines() {
            let chars: Vec<char> = l.chars().collect();
            for chunk in chars.chunks(30) {
                reflowed.push_str(&chunk.iter().collect::<String>());
                reflowed.push('\n');
            }
        }
        let mut s = Screen::new(30);
        s.feed(&reflowed);
        s.feed(&text[second..]);
        assert_eq!(
            s.text(),
            " ⠋ [1/3] RUN sleep 10    1.0s\n ⠋ [2/3] RUN sleep 20    1.0s\n[+] Building 1.0s (0/3)"
        );
    }

    #[test]
    fn short_terminals_keep_the_region_within_the_screen() {
        let (t, buf, _) = tty(40, 5, false);
        for i in 0..6 {
            t.event(&started(i, i + 1, &format!("RUN job {i}"), i + 1));
            t.event(&log(i, "busy"));
        }
        t.draw();
        let s = screen(&buf, 40);
        assert_eq!(
            s,
            " ⠋ [1/3] RUN job 0                 0.0s\n ⠋ [2/3] RUN job 1                 0.0s\n … 4 more running\n[+] Building 0.0s (0/6)"
        );
    }

    #[test]
    fn colors_unless_disabled() {
        let (t, buf, _) = tty(40, 10, true);
        t.event(&started(0, 1, "FROM scratch", 1));
        t.event(&ProgressEvent::StepCached { step: StepId(0) });
        assert!(
            buf.text().contains("\x1b[34m => [1/3] FROM scratch"),
            "{:?}",
            buf.text()
        );
        let (t, buf, _) = tty(40, 10, false);
        t.event(&started(0, 1, "FROM scratch", 1));
        t.event(&ProgressEvent::StepCached { step: StepId(0) });
        assert!(!buf.text().contains("\x1b[3"), "{:?}", buf.text());
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("a\tb\x1b[31mc"), "a b [31mc");
        assert_eq!(printable("10%\r50%\r100%\r"), "100%");
    }
}
