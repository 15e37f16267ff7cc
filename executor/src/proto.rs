//! The wire protocol between [`crate::Executor::run`] (the parent) and the re-executed container
//! init: one JSON [`InitSpec`] from the parent, then newline-separated JSON [`InitEvent`]s back,
//! all over one socketpair that is the init's stdin.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::RootMount;

/// The `argv[1]` sentinel that turns the kiln binary into the container init.
pub(crate) const INIT_ARG: &str = "__kiln_executor_init";

/// Everything the init needs, fully resolved on the host side (paths, bytes, env).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    /// The host pid of the parent; the init exits when it is gone.
    pub(crate) parent_pid: i32,
    /// A private directory for this run: `rootfs/` (mount point) and `scratch/` (tmpfs).
    pub(crate) run_dir: PathBuf,
    pub(crate) rootfs: RootPlan,
    pub(crate) args: Vec<String>,
    /// Final environment except `HOME`, which needs /etc/passwd.
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) user: String,
    pub(crate) hostname: String,
    pub(crate) new_network: bool,
    /// `slirp4netns` to give the new network namespace a way out ([`crate::Network::Private`]).
    #[serde(default)]
    pub(crate) nat: Option<PathBuf>,
    /// `/` is not a mount point (a chroot): the parent bound `run_dir` onto itself and the
    /// init enters a private bind of `/` first (see `chroot.rs`).
    #[serde(default)]
    pub(crate) private_root: bool,
    /// The caller's stdin comes as a descriptor with the spec ([`crate::Interactive::stdin`]).
    #[serde(default)]
    pub(crate) stdin: bool,
    /// A pty of this size (rows, columns) as the command's stdin, stdout and stderr; PID 1
    /// sends its master to the parent with a `Tty` event.
    #[serde(default)]
    pub(crate) tty: Option<(u16, u16)>,
    /// Host ports forwarded by slirp4netns ([`crate::Interactive::publish`]).
    #[serde(default)]
    pub(crate) publish: Vec<crate::interactive::PortMapping>,
    /// Sorted parents first.
    pub(crate) mounts: Vec<PlannedMount>,
    /// Run through this OCI runtime (runc, crun) instead of the built-in container.
    #[serde(default)]
    pub(crate) oci_runtime: Option<PathBuf>,
}

/// How to mount the rootfs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RootPlan {
    Mounts(Vec<RootMount>),
    Dir(PathBuf),
}

/// One mount inside the container, in host terms.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PlannedMount {
    /// A host path bind-mounted at `target`.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        /// Writes go to a throw-away overlay upper (or a copy) on the scratch tmpfs.
        discard_writes: bool,
    },
    /// A fresh tmpfs.
    Tmpfs { target: String, size: Option<u64> },
    /// Bytes written to a file on the scratch tmpfs and bind-mounted read-only at `target`
    /// (secrets, /etc/hosts, /etc/resolv.conf, /etc/hostname).
    File {
        contents: Vec<u8>,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl PlannedMount {
    pub(crate) fn target(&self) -> &str {
        match self {
            PlannedMount::Bind { target, .. }
            | PlannedMount::Tmpfs { target, .. }
            | PlannedMount::File { target, .. } => target,
        }
    }
}

/// What the init reports, in order: `Ready`, `Started`, then `Failed` and/or `Exited`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitEvent {
    /// The init is running (its first event, the handshake).
    Ready,
    /// PID 1's pty master is attached to this message (`SCM_RIGHTS`).
    Tty,
    /// The container's PID 1 exists (host pid).
    Started { pid: i32 },
    /// Setup or exec failed; the message is the whole error.
    Failed { message: String },
    /// The command exited with a code.
    Exited { code: i32 },
    /// The command was killed by a signal.
    Signaled { signal: i32 },
    /// Removing mount stubs after the run failed (the run result stands).
    CleanupFailed { message: String },
    /// The init started this helper (slirp4netns) as a child of the parent, for the parent
    /// to reap: it exits when the init does, tearing its network device down (~25 ms of
    /// kernel work no run waits for).
    Helper { pid: i32 },
}
