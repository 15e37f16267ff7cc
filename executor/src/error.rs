//! The crate's one error type. Every variant names what failed and on which path, user, mount or
//! syscall, so a failed RUN can be explained without a debugger.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while preparing, running or cleaning up a container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory operation on the host side failed.
    #[error("{what} `{}`: {source}", path.display())]
    Io {
        /// What was being done (`create run dir`, `open cache lock`, ...).
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A raw syscall failed (`mount`, `unshare`, `pivot_root`, ...).
    #[error("{op} {detail}: {source}")]
    Sys {
        /// The syscall or step.
        op: &'static str,
        /// Its argument that matters (a path, a flag set), possibly empty.
        detail: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A path inside the container's rootfs could not be resolved or created there
    /// (a symlink chain too long, a component that is not a directory, ...).
    #[error("{what}: {source}")]
    Rootfs {
        /// What the path was for (`mount target`, `working directory`, ...).
        what: &'static str,
        /// The error, naming the path as seen inside the rootfs.
        #[source]
        source: kiln_fs::Error,
    },
    /// The container init binary could not be started.
    #[error("start container init `{}`: {source}", binary.display())]
    Spawn {
        /// The binary that was re-executed.
        binary: PathBuf,
        /// Why it did not start.
        #[source]
        source: io::Error,
    },
    /// The re-executed binary did not become the container init: it exited, ran its own
    /// `main`, or sent nothing within the handshake time.
    #[error("container init `{}` did not start: {reason}", binary.display())]
    InitNotStarted {
        /// The binary that was re-executed.
        binary: PathBuf,
        /// What happened and what to do.
        reason: String,
    },
    /// The process or mount description is unusable.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// `USER` names a user missing from the rootfs' /etc/passwd.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UserNotFound {
        /// The user as written.
        user: String,
    },
    /// `USER` names a group missing from the rootfs' /etc/group.
    #[error("unable to find group {group}: no matching entries in group file")]
    GroupNotFound {
        /// The group as written.
        group: String,
    },
    /// A `required` secret was not given to the build.
    #[error("secret {id} is required but not provided")]
    SecretMissing {
        /// The secret id.
        id: String,
    },
    /// A `required` ssh agent was not given to the build.
    #[error("ssh agent {id} is required but not provided")]
    SshMissing {
        /// The ssh id.
        id: String,
    },
    /// The container init reported a failure while setting up the container or executing the
    /// command (the message comes from inside the container).
    #[error("{0}")]
    Setup(String),
    /// The container init broke the protocol with its parent (crashed, sent garbage).
    #[error("container init: {0}")]
    Protocol(String),
    /// The command ran and exited unsuccessfully (see [`crate::ExitStatus::check`]).
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    ProcessFailed {
        /// The argv joined by spaces, as BuildKit prints it.
        command: String,
        /// The exit code (128 + signal for a killed process).
        code: i32,
        /// The last lines of output (stdout and stderr interleaved).
        last_lines: Vec<String>,
    },
    /// A platform's binaries cannot run on this machine: neither natively nor through a
    /// usable binfmt_misc handler (see [`crate::emulation`]).
    #[error("no emulator for {platform} binaries: {reason}")]
    NoEmulator {
        /// The platform as `linux/ARCH[/VARIANT]`.
        platform: String,
        /// What is missing and what to do about it.
        reason: crate::emulation::NoEmulatorReason,
    },
    /// [`crate::Network::Private`] cannot work: slirp4netns could not open /dev/net/tun (see
    /// [`crate::check_private_network`]); the message says what to do.
    #[error("{}", crate::nat::tun_message(.path, *.mode, .source))]
    TunUnavailable {
        /// The device (`/dev/net/tun`).
        path: PathBuf,
        /// Its permission bits, when it exists.
        mode: Option<u32>,
        /// Why opening it failed.
        #[source]
        source: io::Error,
    },
    /// The run was cancelled through its [`crate::CancelToken`]; the container was killed.
    #[error("cancelled")]
    Cancelled,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn rootfs(what: &'static str) -> impl FnOnce(kiln_fs::Error) -> Self {
        move |source| Error::Rootfs { what, source }
    }

    pub(crate) fn sys(op: &'static str, detail: impl Into<String>, source: io::Error) -> Self {
        Error::Sys {
            op,
            detail: detail.into(),
            source,
        }
    }
}
