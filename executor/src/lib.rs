//! Runs one build-step process inside an isolated Linux container whose root is a snapshot, the
//! way BuildKit's runc executor does, without runc.
//!
//! # Lifecycle of [`Executor::run`]
//!
//! 1. **Plan** (caller's thread): `PATH` is defaulted, mount targets made absolute (relative to
//!    the cwd), `type=cache` directories under `<state_dir>/mounts/cache/` are created or seeded
//!    and locked according to `sharing` (file locks, so it holds across kiln processes),
//!    secrets become bytes, and /etc/hosts, /etc/resolv.conf and /etc/hostname are generated.
//! 2. **Re-exec**: the [`ExecutorConfig::init_binary`] (by default the caller's own
//!    executable, `/proc/self/exe`) is spawned with a sentinel `argv[1]`, the environment
//!    cleared but for a mark, `KILN_EXECUTOR_INIT_OF=<parent pid>`. This crate ships the init
//!    as an ELF constructor (an `.init_array` entry, kept in every binary that links the
//!    crate): the C library calls it with `argc`/`argv` before `main`, before Rust's runtime,
//!    libtest or tokio start a thread; seeing the sentinel, it runs the init and `_exit`s, so
//!    the embedder's `main` never runs there and needs no hook ([`init_main_if_requested`] is
//!    a no-op kept for old callers). The init's first event is a handshake; the parent kills
//!    an init that sent none within 2 s, and a marked process whose `main` reaches
//!    [`Executor::new`] (the constructor did not run) reports that and exits at once:
//!    [`Error::InitNotStarted`] says what happened and what to do, and a build never
//!    recurses. The spec travels over a socketpair. No Rust code ever runs in a forked child
//!    of the (multithreaded) caller.
//! 3. **Init** (single-threaded): unshare mount, PID, IPC, UTS (+ network for
//!    [`Network::None`], with `lo` up, and [`Network::Private`], with `lo` and a slirp4netns
//!    `tap0`) namespaces, hostname `buildkitsandbox`; mount the rootfs
//!    ([`RootFs::Mounts`], e.g. overlay, or a bind of [`RootFs::Dir`]) on a private run
//!    directory; resolve `USER` through the rootfs /etc/passwd and /etc/group; create a missing
//!    working directory (0755, owned by the user; it stays in the snapshot); mount the /etc
//!    files and every [`MountSpec`], creating missing mount points as *stubs*. Overlay options
//!    longer than a page are shortened (lower dirs relative to their common parent). `type=ssh`
//!    mounts get a per-run proxy socket with the mount's uid/gid/mode relaying to the agent.
//!    Where `/` is not a mount point (kiln in a plain chroot) the parent first binds the run
//!    directory onto itself and the init chroots into a private bind of `/` (see `chroot.rs`).
//!    Inside a user namespace (rootless) only mapped ids exist: a step's user, group or
//!    groups outside the map fail up front naming /etc/subuid and the `usermod` command; a
//!    single-id map skips `setgroups`.
//! 4. **PID 1**: the init forks the container's PID 1, which starts a new session, mounts
//!    /proc, a nodev /dev tmpfs (the host's null, zero, full, random, urandom and tty bound
//!    one by one, devpts + ptmx, shm, mqueue) and a read-only /sys (every other mount of the
//!    container, rootfs included, is nodev too: no other device node can be opened), makes the usual /proc paths read-only or masked, applies the mounts
//!    whose target is below /dev (e.g. BuildKit's heredoc scripts at /dev/pipes/NAME) inside
//!    that fresh /dev, pivot_roots, changes to the user and groups, keeps only Docker's default
//!    capabilities (CapEff `00000000a80425fb` for root), sets no_new_privs, installs the
//!    seccomp allow-list of Docker's default profile for the x86-64, i386 and x32 ABIs (keyctl,
//!    bpf, perf_event_open, userfaultfd, io_uring, mount, unshare, ... fail with EPERM; other
//!    architectures are killed) and execs the command, which is thus PID 1 of its
//!    namespace, with stdin /dev/null, default signal dispositions and no descriptor but
//!    0, 1 and 2. [`Executor::run_interactive`] (`kiln run`) can make stdin the caller's
//!    descriptor, give the command a pty ([`Interactive::tty`]), publish ports through
//!    slirp4netns and send signals to PID 1 ([`RunControl`]).
//! 5. **Stream**: stdout and stderr are delivered line by line to `on_output` while the
//!    command runs.
//! 6. **Exit**: when PID 1 exits the kernel kills the rest of the namespace; the init reports
//!    the status, unmounts the RUN mounts and removes the stubs that are still empty (restoring
//!    their parents' timestamps), so the snapshot holds only what the command wrote. Cache
//!    locks are released and the run directory removed.
//! 7. **Cancel**: [`CancelToken::cancel`] makes the init SIGKILL PID 1 (the whole container),
//!    clean up, and `run` returns [`Error::Cancelled`]. If the caller's thread dies, the
//!    parent-death signal takes the init and the container down too.
//!
//! **Foreign platforms**: a RUN of another architecture needs nothing of the executor (the
//! kernel hands the binary to a qemu-user binfmt_misc handler by its ELF header, rootless too);
//! [`emulation`] tells up front whether this machine can: natively, or through an enabled
//! handler registered with the fix-binary flag, else [`Error::NoEmulator`] says what to
//! install. No personality is set for 32-bit platforms, as in BuildKit and runc.
//!
//! **Second backend**: [`Executor::with_oci_runtime`] runs the same step from an OCI runtime
//! spec with runc or crun (steps 1–3, 5–7 unchanged; the runtime does step 4).
//!
//! ```no_run
//! use kiln_executor::*;
//! # fn main() -> Result<()> {
//! // No hook in `main`: RUN re-executes this binary, whose init starts before `main`.
//! let executor = Executor::new(ExecutorConfig::new("/var/lib/kiln"))?;
//! let process = ProcessSpec {
//!     args: vec!["/bin/sh".into(), "-c".into(), "echo hi; id".into()],
//!     cwd: "/src".into(),
//!     user: "nobody".into(),
//!     ..ProcessSpec::default()
//! };
//! let rootfs = RootFs::Mounts(vec![RootMount {
//!     fstype: "overlay".into(),
//!     source: "overlay".into(),
//!     options: vec!["lowerdir=/l,upperdir=/u,workdir=/w".into()],
//! }]);
//! let status = executor.run(&process, &rootfs, &[], &mut |_stream, line| {
//!     print!("{}", String::from_utf8_lossy(line));
//! }, &CancelToken::new())?;
//! status.check(&process.args)?; // `process "..." did not complete successfully: exit code: N`
//! # Ok(()) }
//! ```

mod cache;
mod chroot;
mod copy;
mod emulation;
mod entry;
mod error;
mod etc_files;
mod fdpass;
mod idmap;
mod init;
mod interactive;
mod nat;
mod oci;
mod pid1;
mod proto;
mod run;
mod rundir;
mod seccomp;
mod spec;
mod ssh_proxy;
mod step_mounts;
mod stubs;
mod sys;
mod user;
mod watch;

pub use cache::{cache_dir_name, cache_mounts_dir};
pub use emulation::{BINFMT_MISC_DIR, Emulation, NoEmulatorReason, emulation, emulation_in};
pub use entry::init_main_if_requested;
pub use error::{Error, Result};
pub use interactive::{Interactive, PortMapping, Protocol, RunControl, WindowSize};
pub use nat::{TUN_DEVICE, check_private_network};
pub use oci::find_oci_runtime;
pub use run::{Executor, ExecutorConfig};
pub use spec::{
    BindMount, CacheMount, CacheSharing, CancelToken, DEFAULT_HOSTNAME, DEFAULT_PATH, ExitStatus,
    LAST_LINES, MountSpec, Network, ProcessSpec, RootFs, RootMount, SecretMount, SshMount, Stream,
    TmpfsMount, VolumeMount,
};
