//! The plain-data description of one container run that callers hand to
//! [`crate::Executor::run`]: the process, its root filesystem and its RUN --mount list, plus the
//! results (exit status, output streams) and the cancellation token. No behaviour lives here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The PATH a step gets when its environment has none (BuildKit's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The hostname every container gets unless [`ProcessSpec::hostname`] says otherwise.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The process to run and the identity it runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The argv; `args[0]` is looked up in the container's `PATH` unless it contains a `/`.
    /// Shell form is the caller's business (`["/bin/sh", "-c", "..."]`).
    pub args: Vec<String>,
    /// `KEY=value` pairs, in order. `PATH` is added when missing, `HOME` from /etc/passwd.
    pub env: Vec<String>,
    /// The working directory inside the container; created (0755, owned by the user) when
    /// missing. Empty means `/`.
    pub cwd: String,
    /// `USER` as written: empty (root), `name`, `uid`, `name:group`, `uid:gid`, ...; resolved
    /// through the rootfs' /etc/passwd and /etc/group.
    pub user: String,
    /// The network mode.
    pub network: Network,
    /// The hostname; [`DEFAULT_HOSTNAME`] when `None`.
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` entries as `(hostname, ip)` (`--add-host`).
    pub extra_hosts: Vec<(String, String)>,
}

/// How the container reaches the network (`RUN --network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The build's default: the host's network (so package managers work).
    #[default]
    Default,
    /// The host's network, explicitly.
    Host,
    /// A fresh network namespace with only loopback up.
    None,
    /// A fresh network namespace whose only way out is `slirp4netns` (user-mode NAT, on PATH):
    /// outbound TCP/UDP and DNS work, the host's loopback services, abstract unix sockets,
    /// interfaces and traffic are out of reach.
    Private,
}

/// The root filesystem of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// Mounts applied in order at the root (as a containerd snapshotter returns them), usually
    /// one `overlay` mount whose upper dir is the step's writable snapshot.
    Mounts(Vec<RootMount>),
    /// A plain directory, bind-mounted read-write as the root.
    Dir(PathBuf),
}

/// One mount of the root filesystem, in `mount(8)` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMount {
    /// The filesystem type (`overlay`, `bind`, `tmpfs`, ...).
    pub fstype: String,
    /// The source (`overlay`, or the directory for a bind).
    pub source: String,
    /// `mount -o` options: flags (`ro`, `rbind`, `nosuid`, ...) and data (`lowerdir=...`).
    pub options: Vec<String>,
}

impl RootMount {
    /// An overlay of `upper` (with its `work` dir) on one `lower` directory.
    pub fn overlay(
        lower: &std::path::Path,
        upper: &std::path::Path,
        work: &std::path::Path,
    ) -> Self {
        Self {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            )],
        }
    }
}

/// One `RUN --mount`, already resolved by the solver to host paths and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// `type=bind`.
    Bind(BindMount),
    /// `type=cache`.
    Cache(CacheMount),
    /// `type=tmpfs`.
    Tmpfs(TmpfsMount),
    /// `type=secret`.
    Secret(SecretMount),
    /// `type=ssh`.
    Ssh(SshMount),
    /// `kiln run -v HOST:CTR`: a host path bound as it is; writes reach the host.
    Volume(VolumeMount),
}

/// `kiln run -v HOST:CTR[:ro]` or `--mount type=bind`: a host directory or file bound into the
/// container as docker binds a volume. Unlike a [`BindMount`] with `rw`, whose writes land in
/// a scratch layer, writes go through to the host path. The source must not be a symbolic
/// link (resolve it first); the executor binds what it opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMount {
    /// The host path.
    pub source: PathBuf,
    /// The absolute path inside the container (a relative one is joined to the cwd).
    pub target: String,
    /// `:ro`: mounted read-only.
    pub readonly: bool,
}

/// `RUN --mount=type=bind`: a host directory or file (from the context, a stage or an image)
/// shown at `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindMount {
    /// The host path, resolved by the solver.
    pub source: PathBuf,
    /// The absolute path inside the container (a relative one is joined to the cwd).
    pub target: String,
    /// `rw`: writes are allowed but land in a scratch layer that is thrown away after the run
    /// (the source is never modified). Default (`false`) is read-only.
    pub rw: bool,
}

/// How concurrent users of one cache mount id share it (`sharing=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheSharing {
    /// Every concurrent run uses the same directory.
    #[default]
    Shared,
    /// A run that finds the directory busy gets its own instance (kept for later runs).
    Private,
    /// A run waits until no other run uses the directory.
    Locked,
}

/// `RUN --mount=type=cache`: a persistent directory under `<state_dir>/mounts/cache/`, never
/// part of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    /// The cache id (BuildKit's default is the target path).
    pub id: String,
    /// The absolute path inside the container.
    pub target: String,
    /// The sharing mode.
    pub sharing: CacheSharing,
    /// Mount read-only.
    pub readonly: bool,
    /// Owner of the cache directory when it is created.
    pub uid: u32,
    /// Group of the cache directory when it is created.
    pub gid: u32,
    /// Mode of the cache directory when it is created (default 0755).
    pub mode: u32,
    /// A host directory whose contents seed a newly created cache (`from=`/`source=`).
    pub seed: Option<PathBuf>,
}

impl Default for CacheMount {
    fn default() -> Self {
        CacheMount {
            id: String::new(),
            target: String::new(),
            sharing: CacheSharing::Shared,
            readonly: false,
            uid: 0,
            gid: 0,
            mode: 0o755,
            seed: None,
        }
    }
}

/// `RUN --mount=type=tmpfs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmpfsMount {
    /// The absolute path inside the container.
    pub target: String,
    /// The size limit in bytes (`size=`); unlimited when `None`.
    pub size: Option<u64>,
}

/// `RUN --mount=type=secret`: bytes given to the build, shown as a read-only file on a private
/// tmpfs and/or as an environment variable. Never written to the rootfs or to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    /// The secret id.
    pub id: String,
    /// The secret's bytes; `None` when the build was not given it.
    pub contents: Option<Vec<u8>>,
    /// Where the file goes; `/run/secrets/<id>` when both this and `env` are `None`.
    pub target: Option<String>,
    /// `env=NAME`: also (or only, without `target`) expose the value as this variable.
    pub env: Option<String>,
    /// Fail the run when the secret is missing (otherwise the mount is skipped).
    pub required: bool,
    /// The file mode (default 0400).
    pub mode: u32,
    /// The file owner.
    pub uid: u32,
    /// The file group.
    pub gid: u32,
}

impl Default for SecretMount {
    fn default() -> Self {
        SecretMount {
            id: String::new(),
            contents: None,
            target: None,
            env: None,
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0,
        }
    }
}

/// `RUN --mount=type=ssh`: forwards an ssh-agent socket of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshMount {
    /// The ssh id (`default`).
    pub id: String,
    /// The host agent socket (`--ssh default=$SSH_AUTH_SOCK`); `None` when not given.
    pub socket: Option<PathBuf>,
    /// The socket path in the container; `/run/buildkit/ssh_agent.<N>` when `None`, N
    /// counting ssh mounts from 0.
    pub target: Option<String>,
    /// Fail the run when the socket is missing (otherwise the mount is skipped).
    pub required: bool,
    /// The socket's mode inside the container (default 0600).
    pub mode: u32,
    /// The socket's owner inside the container.
    pub uid: u32,
    /// The socket's group inside the container.
    pub gid: u32,
}

impl Default for SshMount {
    fn default() -> Self {
        SshMount {
            id: "default".to_owned(),
            socket: None,
            target: None,
            required: false,
            mode: 0o600,
            uid: 0,
            gid: 0,
        }
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process' stdout.
    Stdout,
    /// The process' stderr.
    Stderr,
}

/// How the container's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) last_lines: Vec<String>,
}

/// How many trailing output lines [`ExitStatus::last_lines`] keeps.
pub const LAST_LINES: usize = 20;

impl ExitStatus {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code; 128 + signal number when the command was killed by a signal.
    pub fn code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }

    /// The signal that killed the command, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// The last (up to [`LAST_LINES`]) lines of output, stdout and stderr interleaved as they
    /// arrived, without line terminators, lossily decoded.
    pub fn last_lines(&self) -> &[String] {
        &self.last_lines
    }

    /// `Ok(())` on success, else [`Error::ProcessFailed`] naming the command like BuildKit:
    /// `process "/bin/sh -c exit 3" did not complete successfully: exit code: 3`.
    pub fn check(&self, args: &[String]) -> Result<(), Error> {
        if self.success() {
            return Ok(());
        }
        Err(Error::ProcessFailed {
            command: args.join(" "),
            code: self.code(),
            last_lines: self.last_lines.clone(),
        })
    }
}

/// Cancels a running container from another thread: the whole container (every process of its
/// PID namespace) is killed and [`crate::Executor::run`] returns [`Error::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancel every run watching this token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
