//! The private network of [`crate::Network::Private`]: a fresh network namespace whose only way
//! out is `slirp4netns`, a user-mode NAT running in the host's namespace (as rootless Docker,
//! Podman and BuildKit's rootless mode use it). The step gets `tap0` (10.0.2.100/24, gateway
//! 10.0.2.2, DNS 10.0.2.3) with outbound TCP and UDP; `--disable-host-loopback` keeps the
//! host's 127.0.0.1 services out of reach, and being another namespace keeps out the host's
//! abstract unix sockets, interfaces and traffic (a raw socket sees only the step's packets).
//!
//! The init forks a helper before it unshares anything; the helper waits until the init has its
//! new network namespace, then becomes `slirp4netns <init pid> tap0`, which configures it while
//! the init mounts the container (its ~30 ms overlap the setup instead of adding to it), reports
//! readiness on a pipe before the command starts, and exits when the init does (`--exit-fd`: the init holds the other end; the helper
//! also has the parent-death signal). It is a child of the init's parent (`CLONE_PARENT`),
//! which reaps it (see `Executor`'s helper list): the init kills it when the command has exited
//! and does not wait for its slow exit, and no zombie is left to whoever would inherit it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};
use crate::sys;

/// The address of the step's DNS forwarder on the slirp network.
pub(crate) const DNS: &str = "10.0.2.3";

/// The device slirp4netns opens to make the step's `tap0`.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Whether [`crate::Network::Private`] can work for this process: `slirp4netns` (running with
/// its credentials, in its user namespace) must open [`TUN_DEVICE`]. Rootless, a device left
/// mode 0600 (as containers often leave it; Debian's udev rule makes it 0666) or missing is
/// the usual failure; the error says what to do. [`crate::Executor::run`] checks this before
/// every private-network run.
///
/// # Errors
/// [`Error::TunUnavailable`].
pub fn check_private_network() -> Result<()> {
    check_tun(Path::new(TUN_DEVICE))
}

pub(crate) fn check_tun(path: &Path) -> Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(source) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777);
            Err(Error::TunUnavailable {
                path: path.to_path_buf(),
                mode,
                source,
            })
        }
    }
}

/// The text of [`Error::TunUnavailable`]: what is wrong with the device and what to do.
pub(crate) fn tun_message(path: &Path, mode: Option<u32>, source: &std::io::Error) -> String {
    let path = path.display();
    let problem = match (source.kind(), mode) {
        (std::io::ErrorKind::NotFound, _) => format!(
            "{path} does not exist here: create it as root \
             (mkdir -p /dev/net && mknod -m 0666 {path} c 10 200)"
        ),
        (std::io::ErrorKind::PermissionDenied, Some(mode)) => format!(
            "this user cannot open {path} (mode {mode:04o}): run `chmod 0666 {path}` as root \
             (Debian's default mode; containers often leave it 0600)"
        ),
        _ => format!("{path} cannot be opened ({source}): let this user open it (mode 0666)"),
    };
    format!(
        "the private network of RUN steps (slirp4netns) needs {path}, but {problem}; \
         or build with --network=host or --network=none"
    )
}

/// A `slirp4netns` helper forked by the init, waiting for [`Nat::start`].
pub(crate) struct Nat {
    pid: libc::pid_t,
    /// Its stdout and stderr, told when it fails.
    log: PathBuf,
    go: OwnedFd,
    ready: OwnedFd,
    /// Held until the init exits: slirp4netns exits when it closes.
    _exit: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
        .map_err(|e| Error::sys("pipe", "slirp4netns", e.into()))
}

impl Nat {
    /// Forks the helper (call before unsharing any namespace); its output goes to `log`.
    pub(crate) fn spawn(binary: &Path, api_socket: Option<&Path>, log: &Path) -> Result<Nat> {
        let init_pid = std::process::id();
        let (go_read, go_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        let (exit_read, exit_write) = pipe()?;
        let program = CString::new(binary.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidSpec(format!("NUL byte in `{}`", binary.display())))?;
        let mut args = vec![
            "slirp4netns".to_owned(),
            "--configure".to_owned(),
            "--mtu=65520".to_owned(),
            "--disable-host-loopback".to_owned(),
            "--enable-sandbox".to_owned(),
            "--enable-seccomp".to_owned(),
            format!("--ready-fd={}", ready_write.as_raw_fd()),
            format!("--exit-fd={}", exit_read.as_raw_fd()),
        ];
        if let Some(socket) = api_socket {
            args.push(format!("--api-socket={}", socket.display()));
        }
        args.extend([init_pid.to_string(), "tap0".to_owned()]);
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
            .collect();
        let envp = [CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").unwrap_or_default()];
        // The parent's child, not the init's: its exit, which unregisters the tap device
        // (RCU grace periods, ~25 ms), is reaped by the parent later instead of delaying the
        // init's exit and so the run.
        let pid = sys::fork_sibling().map_err(|e| Error::sys("clone", "slirp4netns", e))?;
        if pid == 0 {
            // The helper: nothing here may return into the init's code.
            let _ = sys::set_parent_death_signal(libc::SIGKILL);
            drop(go_write);
            drop(ready_read);
            drop(exit_write);
            let mut byte = [0u8];
            if !matches!(rustix::io::read(&go_read, &mut byte), Ok(1)) {
                sys::exit_now(0);
            }
            for fd in [&ready_write, &exit_read] {
                let _ = rustix::io::fcntl_setfd(fd, FdFlags::empty());
            }
            // Not in the step's output: in a file, read when it fails.
            if let Ok(file) = std::fs::File::create(log) {
                let _ = sys::dup2(file.as_raw_fd(), 1);
                let _ = sys::dup2(file.as_raw_fd(), 2);
            }
            let _ = sys::execve(&program, &argv, &envp);
            sys::exit_now(127);
        }
        Ok(Nat {
            pid,
            log: log.to_path_buf(),
            go: go_write,
            ready: ready_read,
            _exit: exit_write,
        })
    }

    /// Lets the helper attach to the init's (new) network namespace and configure it, while
    /// the init goes on setting up the container; [`Nat::wait_ready`] waits for it.
    pub(crate) fn start(&self) -> Result<()> {
        rustix::io::write(&self.go, b"g")
            .map_err(|e| Error::sys("write", "slirp4netns", e.into()))?;
        Ok(())
    }

    /// Waits until the started helper has configured the namespace (`tap0` up, routes set).
    pub(crate) fn wait_ready(&self) -> Result<()> {
        let mut byte = [0u8];
        loop {
            match rustix::io::read(&self.ready, &mut byte) {
                Ok(1) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Ok(_) => {
                    let said = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let last: Vec<&str> = said
                        .lines()
                        // It warns so on every start.
                        .filter(|l| !l.trim().is_empty() && !l.contains("seccomp is experimental"))
                        .rev()
                        .take(3)
                        .collect();
                    let said = last.into_iter().rev().collect::<Vec<_>>().join("; ");
                    return Err(Error::Setup(if said.is_empty() {
                        "slirp4netns exited before the network was up".to_owned()
                    } else {
                        format!("slirp4netns exited before the network was up: {said}")
                    }));
                }
                Err(e) => return Err(Error::sys("read", "slirp4netns ready", e.into())),
            }
        }
    }
}

impl Nat {
    /// The helper's pid (a child of the init's parent, which reaps it).
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        // Not waited for: the parent reaps it (see `spawn`).
        let _ = sys::kill(self.pid, libc::SIGKILL);
    }
}

/// Forwards a host port to the step's address through slirp4netns's API socket
/// (`add_hostfwd`), as rootless Docker and Podman publish ports.
pub(crate) fn publish(api_socket: &Path, port: &crate::interactive::PortMapping) -> Result<()> {
    use std::io::{Read, Write};
    let shown = format!(
        "{}:{}:{}/{:?}",
        port.host_ip, port.host_port, port.container_port, port.protocol
    );
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": match port.protocol {
                crate::interactive::Protocol::Tcp => "tcp",
                crate::interactive::Protocol::Udp => "udp",
            },
            "host_addr": port.host_ip.to_string(),
            "host_port": port.host_port,
            "guest_port": port.container_port,
        }
    });
    let mut sock = std::os::unix::net::UnixStream::connect(api_socket)
        .map_err(|e| Error::io("connect to slirp4netns", api_socket, e))?;
    let mut response = String::new();
    sock.write_all(request.to_string().as_bytes())
        .and_then(|()| sock.shutdown(std::net::Shutdown::Write))
        .and_then(|()| sock.read_to_string(&mut response).map(drop))
        .map_err(|e| Error::io("talk to slirp4netns", api_socket, e))?;
    let reply: serde_json::Value = serde_json::from_str(&response).map_err(|e| {
        Error::Setup(format!(
            "publish {shown}: bad slirp4netns reply `{response}`: {e}"
        ))
    })?;
    if let Some(error) = reply.get("error") {
        let desc = error
            .get("desc")
            .and_then(|d| d.as_str())
            .unwrap_or("failed");
        return Err(Error::Setup(format!("publish {shown}: {desc}")));
    }
    Ok(())
}
