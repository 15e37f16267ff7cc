//! PID 1 of the container, forked by the init inside the new PID namespace: one more private
//! mount namespace, /proc, a fresh /dev (with the RUN mounts below it), a read-only /sys,
//! masked /proc paths, pivot_root, then credentials, Docker's default capabilities,
//! no_new_privs and the exec of the command, which thereby is PID 1.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use crate::error::{Error, Result};
use crate::idmap::IdView;
use crate::proto::InitEvent;
use crate::step_mounts::{DevMounts, Mounted, apply_mount, bind_at, under_dev};
use crate::sys;
use crate::user::ExecUser;

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub(crate) const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// The device nodes a RUN step can open besides its own devpts and /dev/shm, bound from the
/// host's /dev (as Docker's default device list: null, zero, full, random, urandom, tty).
pub(crate) const STANDARD_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// /proc and /sys paths hidden from the container (containerd's default spec).
pub(crate) const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// /proc paths made read-only (containerd's default spec).
pub(crate) const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// PID 1 of the container: returns only on failure.
pub(crate) fn container_pid1(
    root: &Path,
    dev_mounts: &DevMounts<'_>,
    cwd: &str,
    arg0: &str,
    user: &ExecUser,
    ids: &IdView,
    tty: Option<(u16, u16)>,
    events: BorrowedFd<'_>,
    argv: &[CString],
    envp: &[CString],
) -> Result<Infallible> {
    // Like runc: its own session, so the caller's terminal (if kiln runs in one) is not the
    // command's controlling terminal.
    sys::setsid().map_err(|e| Error::sys("setsid", "", e))?;
    sys::unshare(libc::CLONE_NEWNS).map_err(|e| Error::sys("unshare", "mount namespace", e))?;
    let rootfs = kiln_fs::Root::open(root).map_err(Error::rootfs("open rootfs"))?;
    mount_special(root, &rootfs, ids)?;
    let mut on_tmpfs = Mounted::default();
    for (index, mount) in dev_mounts.mounts.iter().enumerate() {
        if under_dev(mount.target()) {
            apply_mount(&rootfs, dev_mounts.scratch, index, mount, &mut on_tmpfs)?;
        }
    }
    drop(rootfs);
    enter_root(root)?;
    std::env::set_current_dir(cwd).map_err(|e| Error::io("chdir", cwd, e))?;
    let program = find_executable(arg0, envp)?;
    if let Some((rows, cols)) = tty {
        attach_pty(rows, cols, events)?;
    }

    sys::limit_bounding_set(DEFAULT_CAPS).map_err(|e| Error::sys("prctl", "PR_CAPBSET_DROP", e))?;
    sys::set_keep_caps(true).map_err(|e| Error::sys("prctl", "PR_SET_KEEPCAPS", e))?;
    // A single-id map denies setgroups: the groups stay as they are (none but the one id).
    let groups = ids.may_set_groups().then_some(user.groups.as_slice());
    sys::set_ids(user.uid, user.gid, groups)
        .map_err(|e| Error::sys("setuid", format!("{}:{}", user.uid, user.gid), e))?;
    sys::set_keep_caps(false).map_err(|e| Error::sys("prctl", "PR_SET_KEEPCAPS", e))?;
    sys::capset(DEFAULT_CAPS, DEFAULT_CAPS, 0).map_err(|e| Error::sys("capset", "", e))?;
    let _ = sys::clear_ambient();
    sys::set_no_new_privs().map_err(|e| Error::sys("prctl", "PR_SET_NO_NEW_PRIVS", e))?;
    // After the credential change, which clears it.
    sys::set_parent_death_signal(libc::SIGKILL)
        .map_err(|e| Error::sys("prctl", "PR_SET_PDEATHSIG", e))?;
    let filter = crate::seccomp::program();
    sys::install_seccomp(&filter).map_err(|e| Error::sys("prctl", "PR_SET_SECCOMP", e))?;
    let err = sys::execve(&program, argv, envp);
    Err(Error::Setup(format!("exec: \"{arg0}\": {err}")))
}

/// `-t`: a pty of the container's devpts as stdin, stdout, stderr and controlling terminal
/// (PID 1 leads its own session); its master goes to the parent with a `Tty` event.
fn attach_pty(rows: u16, cols: u16, events: BorrowedFd<'_>) -> Result<()> {
    let (master, slave) =
        sys::open_pty(rows, cols).map_err(|e| Error::sys("open", "pty /dev/ptmx", e))?;
    sys::set_controlling_tty(slave.as_fd()).map_err(|e| Error::sys("ioctl", "TIOCSCTTY", e))?;
    for fd in 0..3 {
        sys::dup2(slave.as_raw_fd(), fd).map_err(|e| Error::sys("dup2", "pty", e))?;
    }
    let mut line =
        serde_json::to_vec(&InitEvent::Tty).map_err(|e| Error::Protocol(e.to_string()))?;
    line.push(b'\n');
    crate::fdpass::send_with_fd(events, &line, master.as_fd())
        .map_err(|e| Error::sys("sendmsg", "pty master", e))
}

/// Looks `arg0` up in the container's PATH like Go's `exec.LookPath`, as runc does.
fn find_executable(arg0: &str, envp: &[CString]) -> Result<CString> {
    let not_found = || {
        Error::Setup(format!(
            "exec: \"{arg0}\": executable file not found in $PATH"
        ))
    };
    if arg0.contains('/') {
        return CString::new(arg0).map_err(|_| not_found());
    }
    let path = envp
        .iter()
        .rev()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
            && meta.mode() & 0o111 != 0
        {
            return CString::new(candidate.as_os_str().as_encoded_bytes()).map_err(|_| not_found());
        }
    }
    Err(not_found())
}

/// /proc, /dev and /sys at their places resolved inside the rootfs (a base image whose /proc is
/// a symlink gets them where the link leads, inside the root), then the read-only and masked
/// paths below them.
fn mount_special(root: &Path, rootfs: &kiln_fs::Root, ids: &IdView) -> Result<()> {
    let at = |path: &str| {
        rootfs
            .resolve(path, true)
            .map_err(Error::rootfs("mount target"))
    };
    let proc_dir = at("/proc")?;
    let dev = at("/dev")?;
    let sys_dir = at("/sys")?;
    let special = |path: &str| {
        if let Some(rest) = path.strip_prefix("proc/") {
            proc_dir.join(rest)
        } else if let Some(rest) = path.strip_prefix("sys/") {
            sys_dir.join(rest)
        } else {
            root.join(path)
        }
    };
    let m =
        |source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>| {
            sys::mount(Some(OsStr::new(source)), target, Some(fstype), flags, data)
                .map_err(|e| Error::sys("mount", format!("{fstype} on {}", target.display()), e))
        };
    let nosuid_noexec_nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    m("proc", &proc_dir, "proc", nosuid_noexec_nodev, None)?;

    // /dev is nodev like every other mount of the container: a node created there (or shipped
    // in the rootfs) cannot be opened. The standard nodes are the host's, bind-mounted one by
    // one; each bind is its own mount, which keeps the host /dev's flags.
    m(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in STANDARD_DEVICES {
        let path = dev.join(name);
        fs::File::create(&path).map_err(|e| Error::io("create device mount point", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io("chmod", &path, e))?;
        let host = Path::new("/dev").join(name);
        sys::mount(Some(host.as_os_str()), &path, None, libc::MS_BIND, None).map_err(|e| {
            Error::sys(
                "mount",
                format!("bind {} on {}", host.display(), path.display()),
                e,
            )
        })?;
    }
    for (name, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)] {
        let path = dev.join(name);
        fs::create_dir(&path).map_err(|e| Error::io("create directory", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    // The tty group (5) owns the ptys, where it exists (not with a single-id map).
    let devpts = if ids.maps_gid(5) {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        "newinstance,ptmxmode=0666,mode=0620"
    };
    m(
        "devpts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(devpts),
    )?;
    m(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        nosuid_noexec_nodev,
        Some("mode=1777,size=65536k"),
    )?;
    m(
        "mqueue",
        &dev.join("mqueue"),
        "mqueue",
        nosuid_noexec_nodev,
        None,
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        // Like runc: /dev/core only when the kernel has a /proc/kcore.
        if link == "core" && !Path::new("/proc/kcore").exists() {
            continue;
        }
        let path = dev.join(link);
        symlink(target, &path).map_err(|e| Error::io("create symlink", &path, e))?;
    }

    if m(
        "sysfs",
        &sys_dir,
        "sysfs",
        nosuid_noexec_nodev | libc::MS_RDONLY,
        None,
    )
    .is_err()
    {
        bind_at(Path::new("/sys"), &sys_dir, true)?;
    }

    // Read-only paths first, then masks, in runc's order.
    for path in READONLY_PATHS {
        let target = special(path);
        if target.exists() {
            bind_at(&target, &target, true)?;
        }
    }
    let null = dev.join("null");
    for path in MASKED_PATHS {
        let target = special(path);
        let Ok(meta) = fs::metadata(&target) else {
            continue;
        };
        if meta.is_dir() {
            m("tmpfs", &target, "tmpfs", libc::MS_RDONLY, None)?;
        } else {
            bind_at(&null, &target, false)?;
        }
    }
    Ok(())
}

fn enter_root(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).map_err(|e| Error::io("chdir", root, e))?;
    sys::pivot_root(Path::new("."), Path::new("."))
        .map_err(|e| Error::sys("pivot_root", root.display().to_string(), e))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)
        .map_err(|e| Error::sys("umount", "old root", e))?;
    std::env::set_current_dir("/").map_err(|e| Error::io("chdir", "/", e))?;
    Ok(())
}
