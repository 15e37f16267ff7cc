//! A service's healthcheck while `compose up` waits on `condition: service_healthy`, with
//! docker's timing: a probe every `start_interval` during `start_period` (whose failures do not
//! count), then every `interval`; healthy at the first pass, unhealthy after `retries` failures
//! in a row; a probe over `timeout` fails. kiln keeps no container to `exec` into, so each probe
//! is a sibling container: the service's image, environment, user, working directory, volumes
//! and network namespace (a test like `wget localhost:80` or `pg_isready` sees what docker's
//! would), not its processes or its container-local files.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::compose_file::Probe;

/// Where a service's health stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not decided yet.
    Starting,
    /// A probe passed.
    Healthy,
    /// `retries` probes failed in a row.
    Unhealthy,
}

/// A running healthcheck: its state, and a thread probing until it is decided or stopped.
pub(crate) struct Monitor {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Runs one probe; `true` when it exits 0 within `timeout`. `false` also when stopped.
fn probe_once(mut cmd: Command, timeout: Duration, stop: &AtomicBool) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) => {}
            Err(_) => return false,
        }
        if t0.elapsed() > timeout || stop.load(Ordering::SeqCst) {
            // Two SIGTERMs: `kiln run` kills its container and removes its snapshot.
            let pid = rustix::process::Pid::from_raw(child.id().cast_signed());
            for _ in 0..2 {
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps `d` unless stopped first; `false` when stopped.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !stop.load(Ordering::SeqCst)
}

impl Monitor {
    /// Starts probing a service that just started; `command` makes one probe's `kiln run`.
    pub(crate) fn start(
        probe: Probe,
        command: impl Fn() -> Option<Command> + Send + 'static,
    ) -> Self {
        let state = Arc::new(Mutex::new(State::Starting));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut failures = 0;
            loop {
                let starting = started.elapsed() < probe.start_period;
                let wait = if starting {
                    probe.start_interval
                } else {
                    probe.interval
                };
                if !nap(wait, &sp) {
                    return;
                }
                let passed = command().is_some_and(|c| probe_once(c, probe.timeout, &sp));
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let decided = if passed {
                    Some(State::Healthy)
                } else if started.elapsed() >= probe.start_period {
                    failures += 1;
                    (failures >= probe.retries).then_some(State::Unhealthy)
                } else {
                    None
                };
                if let Some(d) = decided {
                    if let Ok(mut s) = st.lock() {
                        *s = d;
                    }
                    return;
                }
            }
        });
        Monitor {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The state now.
    pub(crate) fn state(&self) -> State {
        self.state.lock().map_or(State::Starting, |s| *s)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
