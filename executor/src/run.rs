//! The parent side of a run: [`Executor::run`] turns the caller's specs into an [`InitSpec`]
//! (`plan.rs`), re-executes the init binary, streams its output line by line, relays
//! cancellation, and reports the exit status.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::chroot::RunDirBind;
use crate::entry::{INIT_MARK_ENV, NOT_AN_INIT_EXIT};
use crate::error::{Error, Result};
use crate::interactive::{Interactive, RunControl};
use crate::proto::{INIT_ARG, InitEvent, InitSpec};
use crate::rundir::{reap_stale_runs, remove_run_dir};
use crate::spec::{
    CancelToken, ExitStatus, LAST_LINES, MountSpec, Network, ProcessSpec, RootFs, Stream,
};
use crate::sys;
use crate::watch::{ReapOnDrop, watch};

mod plan;

use plan::Held;

/// Where the executor finds its init binary and keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// The binary re-executed as the container init: any binary that links this crate (its
    /// constructor runs the init before `main`; see the crate docs), usually the current
    /// executable (`/proc/self/exe`, [`ExecutorConfig::new`]).
    pub init_binary: PathBuf,
    /// The state directory: run directories go to `executor/`, cache mounts to
    /// `mounts/cache/`.
    pub state_dir: PathBuf,
}

impl ExecutorConfig {
    /// Re-executes the current executable (`/proc/self/exe`) as the init, state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        ExecutorConfig {
            init_binary: PathBuf::from("/proc/self/exe"),
            state_dir: state_dir.into(),
        }
    }
}

/// Runs build-step processes in containers. Cheap to share between threads: every
/// [`Executor::run`] is independent.
#[derive(Debug)]
pub struct Executor {
    config: ExecutorConfig,
    oci_runtime: Option<PathBuf>,
    slirp4netns: Option<PathBuf>,
    host_resolv_conf: Option<String>,
    /// In a user namespace with one mapped id: how to add a subordinate range, told after a
    /// step that failed for want of another id.
    single_id_hint: Option<String>,
    /// Whether `/` is a mount point here (not in a plain chroot; see `chroot.rs`).
    root_is_mount: bool,
    runs: AtomicU64,
    /// Helpers the inits started as children of this process (slirp4netns, exiting after
    /// their run), reaped at the next run and when the executor is dropped.
    helpers: Mutex<Vec<libc::pid_t>>,
}

impl Executor {
    /// Reaps the helpers that have exited; with `block`, waits for all of them.
    fn reap_helpers(&self, block: bool) {
        let mut helpers = self.helpers.lock().unwrap_or_else(PoisonError::into_inner);
        helpers.retain(|&pid| {
            if block {
                let _ = sys::waitpid(pid);
                false
            } else {
                !sys::reap_if_exited(pid)
            }
        });
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.reap_helpers(true);
    }
}

impl Executor {
    /// Checks the config and creates `<state_dir>/executor`.
    ///
    /// In a process the executor started as its container init that nevertheless reached
    /// this (its `main` runs a build again because the init constructor did not run), this
    /// reports the failure to the parent and exits the process at once (see the crate docs):
    /// a build never recurses.
    pub fn new(config: ExecutorConfig) -> Result<Self> {
        crate::entry::keep_constructor();
        crate::entry::refuse_if_marked();
        let meta = fs::metadata(&config.init_binary)
            .map_err(|e| Error::io("stat init binary", &config.init_binary, e))?;
        if !meta.is_file() {
            return Err(Error::InvalidSpec(format!(
                "init binary `{}` is not a file",
                config.init_binary.display()
            )));
        }
        let runs = config.state_dir.join("executor");
        fs::create_dir_all(&runs).map_err(|e| Error::io("create run directory", &runs, e))?;
        reap_stale_runs(&runs);
        Ok(Executor {
            host_resolv_conf: fs::read_to_string("/etc/resolv.conf").ok(),
            config,
            oci_runtime: None,
            slirp4netns: None,
            root_is_mount: crate::chroot::root_is_mount_point(),
            single_id_hint: {
                let ids = crate::idmap::IdView::current();
                ids.single_id().then(|| ids.hint())
            },
            runs: AtomicU64::new(0),
            helpers: Mutex::new(Vec::new()),
        })
    }

    /// Runs containers with an external OCI runtime (`runc`, `crun`; see
    /// [`crate::find_oci_runtime`]) from an OCI runtime spec instead of the built-in container.
    /// The rootfs, RUN mounts, /etc files and stub cleanup are the same; setup failures inside
    /// the runtime (such as a missing executable) show as its output and a non-zero exit code
    /// rather than as [`Error::Setup`].
    pub fn with_oci_runtime(mut self, runtime: impl Into<PathBuf>) -> Self {
        self.oci_runtime = Some(runtime.into());
        self
    }

    /// Runs the user-mode network of [`Network::Private`] with this `slirp4netns` binary
    /// (default: the one in the system's bin or sbin directories; `PATH` is not read).
    #[must_use]
    pub fn with_slirp4netns(mut self, binary: impl Into<PathBuf>) -> Self {
        self.slirp4netns = Some(binary.into());
        self
    }

    /// The configuration this executor was made with.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Runs `process` in a container over `rootfs` with `mounts`, calling `on_output` with
    /// every line (including its `\n`; a final partial line without) as it arrives, until the
    /// command exits or `cancel` is cancelled. See the crate docs for the lifecycle.
    ///
    /// A command that runs and exits non-zero is `Ok` with an unsuccessful [`ExitStatus`];
    /// `Err` means the container could not be set up or the command not executed (for example
    /// `exec: "x": executable file not found in $PATH`), or [`Error::Cancelled`].
    pub fn run(
        &self,
        process: &ProcessSpec,
        rootfs: &RootFs,
        mounts: &[MountSpec],
        on_output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &CancelToken,
    ) -> Result<ExitStatus> {
        self.run_with(
            process,
            rootfs,
            mounts,
            Interactive::default(),
            on_output,
            cancel,
            None,
        )
    }

    /// [`Executor::run`] for `kiln run`: the container's stdin is the caller's descriptor,
    /// host ports are forwarded to it, and `control` sends signals to its PID 1 while it runs
    /// (and cancels it). `io.tty` is not supported yet; `io.publish` needs
    /// [`Network::Private`].
    pub fn run_interactive(
        &self,
        process: &ProcessSpec,
        rootfs: &RootFs,
        mounts: &[MountSpec],
        io: Interactive,
        on_output: &mut dyn FnMut(Stream, &[u8]),
        control: &RunControl,
    ) -> Result<ExitStatus> {
        if io.tty.is_some() && self.oci_runtime.is_some() {
            return Err(Error::InvalidSpec(
                "a pty (-t) is not supported with an OCI runtime".into(),
            ));
        }
        if !io.publish.is_empty() && process.network != Network::Private {
            return Err(Error::InvalidSpec(
                "published ports need the private network (slirp4netns)".into(),
            ));
        }
        self.run_with(
            process,
            rootfs,
            mounts,
            io,
            on_output,
            control.cancel_token(),
            Some(control),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with(
        &self,
        process: &ProcessSpec,
        rootfs: &RootFs,
        mounts: &[MountSpec],
        io: Interactive,
        on_output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &CancelToken,
        control: Option<&RunControl>,
    ) -> Result<ExitStatus> {
        if process.args.is_empty() {
            return Err(Error::InvalidSpec("empty argv".into()));
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.reap_helpers(false);
        let run_dir = self.make_run_dir()?;
        let mut held = Held::default();
        let bound = if self.root_is_mount {
            Ok(())
        } else {
            RunDirBind::new(&run_dir).map(|bind| held.run_dir_bind = Some(bind))
        };
        let result = bound
            .and_then(|()| self.plan(process, rootfs, mounts, cancel, &run_dir, &mut held))
            .and_then(|mut spec| {
                // With a pty the parent forwards stdin through its master.
                spec.stdin = io.stdin.is_some() && io.tty.is_none();
                spec.tty = io.tty.map(|size| (size.rows, size.cols));
                spec.publish.clone_from(&io.publish);
                self.spawn_and_watch(&spec, io.stdin.as_ref(), on_output, cancel, control)
            });
        drop(held);
        remove_run_dir(&run_dir);
        result
    }

    fn make_run_dir(&self) -> Result<PathBuf> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = self
            .config
            .state_dir
            .join("executor")
            .join(format!("run-{}-{n}-{nanos:x}", std::process::id()));
        for d in [dir.clone(), dir.join("rootfs"), dir.join("scratch")] {
            fs::create_dir_all(&d).map_err(|e| Error::io("create run directory", &d, e))?;
        }
        Ok(dir)
    }

    fn spawn_and_watch(
        &self,
        spec: &InitSpec,
        stdin: Option<&OwnedFd>,
        on_output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &CancelToken,
        control: Option<&RunControl>,
    ) -> Result<ExitStatus> {
        let binary = &self.config.init_binary;
        let spawn_err = |source| Error::Spawn {
            binary: binary.clone(),
            source,
        };
        let (sock, child_sock) = UnixStream::pair().map_err(spawn_err)?;
        let child = {
            let mut cmd = Command::new(binary);
            cmd.arg(INIT_ARG)
                .env_clear()
                .env(INIT_MARK_ENV, std::process::id().to_string())
                .stdin(Stdio::from(OwnedFd::from(child_sock)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().map_err(spawn_err)?
            // `cmd` (holding the child's end of the socket) is dropped here.
        };
        // Whatever happens below (an error, a panicking callback), the init is not left running.
        let mut child = ReapOnDrop {
            child,
            reaped: false,
        };
        let payload = serde_json::to_vec(spec).map_err(|e| Error::Protocol(e.to_string()))?;
        // Without SIGPIPE (the embedder may not ignore it): an init that died early is
        // reported below from what it did send.
        let sent = match stdin.filter(|_| spec.stdin) {
            // The descriptor rides on the first byte of the spec.
            Some(fd) if !payload.is_empty() => {
                crate::fdpass::send_with_fd(sock.as_fd(), &payload[..1], fd.as_fd())
                    .and_then(|()| sys::send_all_nosignal(sock.as_fd(), &payload[1..]))
            }
            _ => sys::send_all_nosignal(sock.as_fd(), &payload),
        }
        .and_then(|()| sock.shutdown(std::net::Shutdown::Write));
        let (events, tail, cancelled) = watch(
            &mut child.child,
            sock,
            on_output,
            cancel,
            control,
            stdin.filter(|_| spec.tty.is_some()),
        )
        .map_err(|e| match e {
            Error::InitNotStarted { reason, .. } => Error::InitNotStarted {
                binary: binary.clone(),
                reason,
            },
            e => e,
        })?;
        let helpers = events.iter().filter_map(|e| match e {
            InitEvent::Helper { pid } => Some(*pid),
            _ => None,
        });
        self.helpers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(helpers);
        let status = child
            .wait()
            .map_err(|e| Error::Protocol(format!("wait: {e}")))?;
        if cancelled {
            return Err(Error::Cancelled);
        }
        if !matches!(events.first(), Some(InitEvent::Ready)) {
            let reason = match events.into_iter().next() {
                Some(InitEvent::Failed { message }) => message,
                _ if status.code() == Some(NOT_AN_INIT_EXIT) => {
                    format!("it exited ({status}) after running its own main")
                }
                _ => format!(
                    "it exited ({status}) without the kiln init handshake: the kiln-executor \
                     constructor did not run in it; re-execute a binary that links \
                     kiln-executor (the default, the current executable) or whose main calls \
                     `kiln_executor::init_main_if_requested()` first"
                ),
            };
            return Err(Error::InitNotStarted {
                binary: binary.clone(),
                reason,
            });
        }
        if let Err(e) = sent {
            return Err(Error::Protocol(format!("send spec: {e}")));
        }
        let mut exit = None;
        let mut failure = None;
        for event in events {
            match event {
                InitEvent::Ready
                | InitEvent::Tty
                | InitEvent::Started { .. }
                | InitEvent::Helper { .. } => {}
                InitEvent::Failed { message } => {
                    failure.get_or_insert(message);
                }
                InitEvent::Exited { code } => exit = Some((Some(code), None)),
                InitEvent::Signaled { signal } => exit = Some((None, Some(signal))),
                InitEvent::CleanupFailed { message } => {
                    tracing::warn!("removing mount stubs failed: {message}");
                }
            }
        }
        if let Some(message) = failure {
            return Err(Error::Setup(message));
        }
        match exit {
            Some((code, signal)) => {
                let mut tail = tail;
                if code != Some(0)
                    && let Some(hint) = &self.single_id_hint
                    && tail.iter().any(|l| {
                        l.contains("Invalid argument") || l.contains("Operation not permitted")
                    })
                {
                    // Most likely a chown or setuid to an id the namespace does not map.
                    let line = format!("{hint} (a step that changes owners or users needs it)");
                    on_output(Stream::Stderr, format!("{line}\n").as_bytes());
                    tail.push_back(line);
                    if tail.len() > LAST_LINES {
                        tail.pop_front();
                    }
                }
                Ok(ExitStatus {
                    code,
                    signal,
                    last_lines: tail.into(),
                })
            }
            None => Err(Error::Protocol(format!(
                "`{}` exited ({status}) without reporting the command's status",
                self.config.init_binary.display()
            ))),
        }
    }
}
