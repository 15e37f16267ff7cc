//! Issue 14: two kiln processes building the same step on one state dir run it once. The
//! second waits (saying so in the step's log) and takes the first one's result as a cache hit;
//! when the first is killed, the kernel releases its claim and the second runs the step itself.

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{busybox_context, kiln, not_root, tempdir};

const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /busybox\n\
RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox sleep 3 && /busybox date > /t\"]\n";

/// A json build running in the background, its events arriving on a channel.
struct Build {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Build {
    fn start(state: &tempfile::TempDir, ctx: &std::path::Path) -> Self {
        let mut child = kiln(state)
            .args(["build", "--progress=json"])
            .arg(ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kiln");
        let err = child.stderr.take().expect("stderr");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"type": "text", "line": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 60 s) for an event `pred` accepts.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.seen.iter().any(&pred) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(e) => panic!("no {what} ({e}) in {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to end; returns whether it succeeded and every event.
    fn finish(mut self) -> (bool, Vec<serde_json::Value>) {
        let ok = self.child.wait().expect("wait").success();
        self.seen.extend(self.events.iter());
        (ok, self.seen)
    }
}

/// The step number of the RUN step in `events`.
fn run_step(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .find(|v| {
            v["type"] == "step_started"
                && v["instruction"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("RUN"))
        })
        .and_then(|v| v["step"].as_u64())
        .unwrap_or_else(|| panic!("no RUN step in {events:#?}"))
}

/// How the RUN step ended: `step_done` (it ran) or `step_cached`.
fn run_outcome(events: &[serde_json::Value]) -> String {
    let step = run_step(events);
    events
        .iter()
        .filter(|v| v["step"].as_u64() == Some(step))
        .filter_map(|v| v["type"].as_str())
        .find(|t| matches!(*t, "step_done" | "step_cached" | "step_failed"))
        .unwrap_or("none")
        .to_string()
}

fn waited(events: &[serde_json::Value]) -> bool {
    let step = run_step(events);
    events.iter().any(|v| {
        v["type"] == "step_log"
            && v["step"].as_u64() == Some(step)
            && v["line"] == "waiting for another build of this step"
    })
}

fn is_run_started(v: &serde_json::Value) -> bool {
    v["type"] == "step_started"
        && v["instruction"]
            .as_str()
            .is_some_and(|i| i.starts_with("RUN"))
}

#[test]
fn two_identical_builds_at_once_run_the_step_once() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(DOCKERFILE) else {
        return;
    };
    // One build alone, for the time it takes.
    let alone = tempdir();
    let t0 = Instant::now();
    let (ok, events) = Build::start(&alone, ctx.path()).finish();
    let one = t0.elapsed();
    assert!(ok, "{events:#?}");
    assert_eq!(run_outcome(&events), "step_done");

    let state = tempdir();
    let t0 = Instant::now();
    let a = Build::start(&state, ctx.path());
    let b = Build::start(&state, ctx.path());
    let (a_ok, a_events) = a.finish();
    let (b_ok, b_events) = b.finish();
    let both = t0.elapsed();
    assert!(a_ok && b_ok, "{a_events:#?}\n{b_events:#?}");
    let mut outcomes = [run_outcome(&a_events), run_outcome(&b_events)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["step_cached", "step_done"],
        "exactly one runs the RUN"
    );
    let waiter = if run_outcome(&a_events) == "step_cached" {
        &a_events
    } else {
        &b_events
    };
    assert!(waited(waiter), "the waiting build says so: {waiter:#?}");
    assert!(
        both.as_secs_f64() < 1.5 * one.as_secs_f64(),
        "two builds at once took {both:?}, one alone {one:?}"
    );
    // Both made the same image.
    let digest = |ev: &[serde_json::Value]| {
        ev.iter()
            .find(|v| v["type"] == "image_written")
            .map(|v| v["config_digest"].clone())
    };
    assert_eq!(digest(&a_events), digest(&b_events));
    assert!(digest(&a_events).is_some());
}

#[test]
fn a_killed_first_build_releases_the_step_to_the_waiting_one() {
    if not_root() {
        return;
    }
    let Some(ctx) = busybox_context(DOCKERFILE) else {
        return;
    };
    let state = tempdir();
    let mut a = Build::start(&state, ctx.path());
    a.wait_for("RUN step_started of the first build", is_run_started);
    // The first build is inside its RUN (it holds the claim before starting the process).
    std::thread::sleep(Duration::from_millis(500));
    let mut b = Build::start(&state, ctx.path());
    b.wait_for("waiting line of the second build", |v| {
        v["line"] == "waiting for another build of this step"
    });
    let pid = libc::pid_t::try_from(a.child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let (a_ok, _) = a.finish();
    assert!(!a_ok);
    let t0 = Instant::now();
    let (b_ok, b_events) = b.finish();
    assert!(b_ok, "{b_events:#?}");
    assert_eq!(run_outcome(&b_events), "step_done", "{b_events:#?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "the second build ran the 3 s step itself"
    );
}
