//! The container init: the code that runs in the re-executed binary (`<binary>
//! __kiln_executor_init`), single-threaded from its first instruction, and builds the container.
//!
//! Two processes take part:
//! - the **init** reads the [`InitSpec`], unshares the mount, PID, IPC, UTS (and, for
//!   `--network=none`, network) namespaces, mounts the rootfs and every RUN --mount under a
//!   private run directory (creating and recording mount-point stubs), then forks;
//! - its child, **PID 1** of the new PID namespace (see `pid1.rs`), takes one more private
//!   mount namespace, mounts /proc, /dev, /sys, pivots into the rootfs, switches user, limits
//!   capabilities and execs the command.
//!
//! The init waits for PID 1 (whose exit kills every other process of the namespace), reports
//! the status, unmounts the RUN mounts and removes the stubs that are still empty. A SIGTERM to
//! the init (cancellation) kills PID 1 with SIGKILL. With an OCI runtime (`oci.rs`) the init
//! runs the runtime instead of forking PID 1 itself.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::{InitEvent, InitSpec, RootPlan};
use crate::spec::RootMount;
use crate::step_mounts::{DevMounts, Mounted, apply_mount, under_dev};
use crate::stubs::StubKind;
use crate::sys;
use crate::user::resolve;

/// Reports events to the parent over the socket; shared (inherited) by PID 1 until its exec.
struct Events(UnixStream);

impl Events {
    fn send(&self, event: &InitEvent) {
        send_event(&self.0, event);
    }
}

fn send_event(sock: &UnixStream, event: &InitEvent) {
    if let Ok(mut line) = serde_json::to_vec(event) {
        line.push(b'\n');
        let _ = (&*sock).write_all(&line);
    }
}

/// The init's whole life (called from the constructor in `entry.rs`); returns the exit code.
pub(crate) fn init_main() -> i32 {
    sys::reset_signals();
    sys::cloexec_from_3();
    // A cancellation during setup is noted and acted on before the fork, after which it kills
    // PID 1; either way the stubs are cleaned up.
    if sys::forward_sigterm_as_kill(0).is_err() {
        return 124;
    }
    // The socket arrives as stdin; move it out of the way (close-on-exec) and give stdin
    // /dev/null, which the command inherits.
    let Ok(sock) = sys::dup_cloexec(0) else {
        return 120;
    };
    let sock = UnixStream::from(sock);
    // The handshake: the parent now knows the init (not the binary's own main) is running.
    send_event(&sock, &InitEvent::Ready);
    if let Ok(null) = File::open("/dev/null") {
        let _ = sys::dup2(null.as_raw_fd(), 0);
    }
    let Ok((buf, fds)) = crate::fdpass::recv_all_with_fds(&sock) else {
        return 121;
    };
    let events = Events(sock);
    let spec: InitSpec = match serde_json::from_slice(&buf) {
        Ok(spec) => spec,
        Err(e) => {
            events.send(&InitEvent::Failed {
                message: format!("container init: bad spec: {e}"),
            });
            return 122;
        }
    };
    // `-i`: the caller's stdin, sent along with the spec, is the command's.
    if spec.stdin
        && let Some(stdin) = fds.first()
    {
        let _ = sys::dup2(stdin.as_raw_fd(), 0);
    }
    drop(fds);
    // Die with the thread that started us, so a killed kiln leaves no container behind.
    if sys::set_parent_death_signal(libc::SIGKILL).is_err() || sys::getppid() != spec.parent_pid {
        return 123;
    }
    let mut state = Mounted::default();
    let result = run(&spec, &events, &mut state);
    for mount in state.mounts.iter().rev() {
        mount.unmount();
    }
    if let Err(e) = state.stubs.clean() {
        events.send(&InitEvent::CleanupFailed {
            message: e.to_string(),
        });
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            events.send(&InitEvent::Failed {
                message: e.to_string(),
            });
            1
        }
    }
}

fn run(spec: &InitSpec, events: &Events, state: &mut Mounted) -> Result<()> {
    sys::umask(0o022);
    // With an OCI runtime, the runtime makes the PID, IPC and UTS namespaces itself.
    let mut flags = libc::CLONE_NEWNS;
    if spec.oci_runtime.is_none() {
        flags |= libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    }
    if spec.new_network {
        flags |= libc::CLONE_NEWNET;
    }
    // Forked while the init is still in the host's namespaces; lives as long as the init.
    let api_socket = spec.run_dir.join("slirp4netns.sock");
    let nat = spec
        .nat
        .as_deref()
        .map(|binary| {
            crate::nat::Nat::spawn(
                binary,
                (!spec.publish.is_empty()).then_some(&*api_socket),
                &spec.run_dir.join("slirp4netns.log"),
            )
        })
        .transpose()?;
    if let Some(nat) = &nat {
        events.send(&InitEvent::Helper { pid: nat.pid() });
    }
    sys::unshare(flags).map_err(|e| Error::sys("unshare", "namespaces", e))?;
    if spec.private_root {
        crate::chroot::enter_private_root(&spec.run_dir)?;
    }
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (`/` is not a mount point: kiln runs in a chroot on a kernel older than 5.8, \
             which cannot tell; run kiln outside the chroot or bind-mount its root onto itself)"
        } else {
            ""
        };
        Error::sys("mount", format!("make / rprivate{hint}"), e)
    })?;
    if spec.new_network {
        sys::loopback_up().map_err(|e| Error::sys("ioctl", "bring lo up", e))?;
    }
    // slirp4netns configures the namespace while the container is set up; waited for below.
    if let Some(nat) = &nat {
        nat.start()?;
    }
    if spec.oci_runtime.is_none() {
        sys::sethostname(&spec.hostname)
            .map_err(|e| Error::sys("sethostname", &spec.hostname, e))?;
    }

    let root = spec.run_dir.join("rootfs");
    let scratch = spec.run_dir.join("scratch");
    sys::mount(
        Some(OsStr::new("tmpfs")),
        &scratch,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=700"),
    )
    .map_err(|e| Error::sys("mount", format!("tmpfs on {}", scratch.display()), e))?;
    mount_rootfs(&spec.rootfs, &root)?;
    // No device node in the rootfs (a base image may ship one, a step may mknod one) can be
    // opened; PID 1 binds the standard ones onto its nodev /dev.
    sys::set_nodev_recursive(&root).map_err(|e| Error::sys("mount_setattr", "nodev rootfs", e))?;

    // Every path of the rootfs from here on is resolved by the kernel inside it.
    let rootfs = kiln_fs::Root::open(&root).map_err(Error::rootfs("open rootfs"))?;
    let passwd = read_user_file(&rootfs, "/etc/passwd");
    let group = read_user_file(&rootfs, "/etc/group");
    let user = resolve(&spec.user, passwd.as_deref(), group.as_deref())?;
    // In a user namespace (rootless) only mapped ids exist.
    let ids = crate::idmap::IdView::current();
    ids.check_user(&spec.user, &user)?;

    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    rootfs
        .mkdir_all(cwd, 0o755, Some((user.uid, user.gid)))
        .map_err(Error::rootfs("working directory"))?;

    for dir in ["/proc", "/dev", "/sys"] {
        state.stubs.ensure(&rootfs, dir, StubKind::Dir)?;
    }
    for (index, mount) in spec.mounts.iter().enumerate() {
        if !under_dev(mount.target()) {
            apply_mount(&rootfs, &scratch, index, mount, state)?;
        }
    }

    if let Some(nat) = &nat {
        nat.wait_ready()?;
        for port in &spec.publish {
            crate::nat::publish(&api_socket, port)?;
        }
    }

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    if let Some(runtime) = &spec.oci_runtime {
        let config = crate::oci::runtime_spec(spec, &root, &scratch, &user, &env, cwd)?;
        let status = crate::oci::run(runtime, spec, &config)?;
        events.send(&match status {
            sys::WaitStatus::Exited(code) => InitEvent::Exited { code },
            sys::WaitStatus::Signaled(signal) => InitEvent::Signaled { signal },
        });
        return Ok(());
    }
    let argv = to_cstrings(&spec.args)?;
    let envp = to_cstrings(&env)?;

    sys::block_sigterm().map_err(|e| Error::sys("sigprocmask", "", e))?;
    sys::forward_sigterm_as_kill(0).map_err(|e| Error::sys("sigaction", "SIGTERM", e))?;
    if sys::sigterm_received() {
        return Err(Error::Cancelled);
    }
    let pid = sys::fork().map_err(|e| Error::sys("fork", "", e))?;
    if pid == 0 {
        sys::default_sigterm();
        let _ = sys::unblock_sigterm();
        let dev_mounts = DevMounts {
            scratch: &scratch,
            mounts: &spec.mounts,
        };
        let err = match crate::pid1::container_pid1(
            &root,
            &dev_mounts,
            cwd,
            &spec.args[0],
            &user,
            &ids,
            spec.tty,
            events.0.as_fd(),
            &argv,
            &envp,
        ) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        events.send(&InitEvent::Failed {
            message: err.to_string(),
        });
        sys::exit_now(127);
    }
    sys::forward_sigterm_as_kill(pid).map_err(|e| Error::sys("sigaction", "SIGTERM", e))?;
    sys::unblock_sigterm().map_err(|e| Error::sys("sigprocmask", "", e))?;
    events.send(&InitEvent::Started { pid });

    // Only the container may hold the output pipes now, so they end when it does.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = sys::dup2(null.as_raw_fd(), 1);
        let _ = sys::dup2(null.as_raw_fd(), 2);
    }
    sys::wait_exited_noreap(pid).map_err(|e| Error::sys("waitid", pid.to_string(), e))?;
    // No SIGTERM may kill a reaped (maybe reused) pid.
    let _ = sys::block_sigterm();
    let _ = sys::forward_sigterm_as_kill(0);
    let status = sys::waitpid(pid).map_err(|e| Error::sys("waitpid", pid.to_string(), e))?;
    // The network goes down (in the background) while the init cleans up.
    drop(nat);
    events.send(&match status {
        sys::WaitStatus::Exited(code) => InitEvent::Exited { code },
        sys::WaitStatus::Signaled(signal) => InitEvent::Signaled { signal },
    });
    Ok(())
}

/// An /etc/passwd or /etc/group of the rootfs (resolved inside it): at most 10 MiB (as
/// BuildKit reads), lossily decoded; `None` when missing or unreadable.
fn read_user_file(rootfs: &kiln_fs::Root, path: &str) -> Option<String> {
    let fd = rootfs
        .open_at(
            path,
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
            true,
        )
        .ok()?;
    let mut bytes = Vec::new();
    File::from(fd).take(10 << 20).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::InvalidSpec(format!("NUL byte in `{}`", s.escape_debug())))
        })
        .collect()
}

/// Splits `mount -o` options into flags, data, and whether it is a (recursive) bind.
fn parse_options(options: &[String]) -> (libc::c_ulong, String, Option<bool>) {
    let mut flags = 0;
    let mut data = Vec::new();
    let mut bind = None;
    for opt in options {
        match opt.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "dirsync" => flags |= libc::MS_DIRSYNC,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "bind" => bind = Some(bind.unwrap_or(false)),
            "rbind" => bind = Some(true),
            other => data.push(other),
        }
    }
    (flags, data.join(","), bind)
}

fn mount_rootfs(plan: &RootPlan, root: &Path) -> Result<()> {
    let bind = |source: &Path, recursive: bool, readonly: bool| -> Result<()> {
        let rec = if recursive { libc::MS_REC } else { 0 };
        sys::mount(
            Some(source.as_os_str()),
            root,
            None,
            libc::MS_BIND | rec,
            None,
        )
        .map_err(|e| Error::sys("mount", format!("bind {} as rootfs", source.display()), e))?;
        if readonly {
            sys::mount(
                None,
                root,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                None,
            )
            .map_err(|e| Error::sys("mount", "remount rootfs read-only", e))?;
        }
        Ok(())
    };
    match plan {
        RootPlan::Dir(dir) => bind(dir, true, false),
        RootPlan::Mounts(mounts) => {
            if mounts.is_empty() {
                return Err(Error::InvalidSpec("rootfs has no mounts".into()));
            }
            for RootMount {
                fstype,
                source,
                options,
            } in mounts
            {
                let (flags, data, is_bind) = parse_options(options);
                if fstype == "bind" || fstype == "rbind" || is_bind.is_some() {
                    let recursive = fstype == "rbind" || is_bind == Some(true);
                    bind(Path::new(source), recursive, flags & libc::MS_RDONLY != 0)?;
                    continue;
                }
                mount_fs(source, root, fstype, flags, &data).map_err(|e| {
                    Error::sys(
                        "mount",
                        format!("{fstype} rootfs from {source} (options {options:?})"),
                        e,
                    )
                })?;
            }
            Ok(())
        }
    }
}

/// The most mount data the kernel copies (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// `mount(2)` of a filesystem; overlay options longer than a page are shortened by making the
/// lower dirs relative to their common parent and mounting from there (as containerd does).
/// The init is single-threaded, so changing its working directory is safe.
fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let opt = (!data.is_empty()).then_some(data);
    if fstype != "overlay" || data.len() <= MAX_MOUNT_DATA {
        return sys::mount(Some(OsStr::new(source)), target, Some(fstype), flags, opt);
    }
    let too_long = || std::io::Error::from_raw_os_error(libc::E2BIG);
    let (dir, compact) = compact_lowerdirs(data).ok_or_else(too_long)?;
    if compact.len() > MAX_MOUNT_DATA {
        return Err(too_long());
    }
    std::env::set_current_dir(&dir)?;
    let result = sys::mount(
        Some(OsStr::new(source)),
        target,
        Some(fstype),
        flags,
        Some(&compact),
    );
    std::env::set_current_dir("/")?;
    result
}

/// `lowerdir=` entries rewritten relative to their longest common parent directory.
fn compact_lowerdirs(data: &str) -> Option<(PathBuf, String)> {
    let options: Vec<&str> = data.split(',').collect();
    let lower = options.iter().find_map(|o| o.strip_prefix("lowerdir="))?;
    let dirs: Vec<&Path> = lower.split(':').map(Path::new).collect();
    let mut common: PathBuf = dirs.first()?.parent()?.to_path_buf();
    while !dirs.iter().all(|d| d.starts_with(&common)) {
        if !common.pop() {
            return None;
        }
    }
    // Relative to `/` would not be shorter.
    common.parent()?;
    let relative: Option<Vec<String>> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(&common)
                .ok()
                .map(|r| r.display().to_string())
        })
        .collect();
    let relative = relative?.join(":");
    let rewritten: Vec<String> = options
        .iter()
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={relative}")
            } else {
                (*o).to_owned()
            }
        })
        .collect();
    Some((common, rewritten.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_overlay_options_become_relative_to_the_common_parent() {
        let data = "lowerdir=/s/snapshots/3/fs:/s/snapshots/2/fs:/s/snapshots/1/fs,\
                    upperdir=/s/snapshots/4/fs,workdir=/s/snapshots/4/work";
        let (dir, compact) = compact_lowerdirs(data).unwrap();
        assert_eq!(dir, Path::new("/s/snapshots"));
        assert_eq!(
            compact,
            "lowerdir=3/fs:2/fs:1/fs,upperdir=/s/snapshots/4/fs,workdir=/s/snapshots/4/work"
        );
        assert!(compact_lowerdirs("lowerdir=/a:/b,upperdir=/u").is_none());
    }
}
