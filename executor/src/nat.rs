//! The private network of [`crate::Network::Private`]: a fresh network namespace whose only way
//! out is `slirp4netns`, a user-mode NAT running in the host's namespace (as rootless Docker,
//! Podman and BuildKit's rootless mode use it). The step gets `tap0` (10.0.2.100/24, gateway
//! 10.0.2.2, DNS 10.0.2.3) with outbound TCP and UDP; `--disable-host-loopback` keeps the
//! host's 127.0.0.1 services out of reach, and being another namespace keeps out the host's
//! abstract unix sockets, interfaces and traffic (a raw socket sees only the step's packets).
//!
//! The init forks a helper before it unshares anything; the helper waits until the init has its
//! new network namespace, then becomes `slirp4netns <init pid> tap0`, which reports readiness on
//! a pipe and exits when the init does (`--exit-fd`: the init holds the other end; the helper
//! also has the parent-death signal). The init kills and reaps it when the run is over, so no
//! zombie is left to whoever would inherit it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};
use crate::sys;

/// The address of the step's DNS forwarder on the slirp network.
pub(crate) const DNS: &str = "10.0.2.3";

/// A `slirp4netns` helper forked by the init, waiting for [`Nat::start`].
pub(crate) struct Nat {
    pid: libc::pid_t,
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
    /// Forks the helper (call before unsharing any namespace).
    pub(crate) fn spawn(binary: &Path, api_socket: Option<&Path>) -> Result<Nat> {
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
        let pid = sys::fork().map_err(|e| Error::sys("fork", "slirp4netns", e))?;
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
            // Its log would land in the step's output.
            if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
                let _ = sys::dup2(null.as_raw_fd(), 1);
                let _ = sys::dup2(null.as_raw_fd(), 2);
            }
            let _ = sys::execve(&program, &argv, &envp);
            sys::exit_now(127);
        }
        Ok(Nat {
            pid,
            go: go_write,
            ready: ready_read,
            _exit: exit_write,
        })
    }

    /// Lets the helper attach to the init's (new) network namespace and waits until the
    /// namespace is configured.
    pub(crate) fn start(&self) -> Result<()> {
        rustix::io::write(&self.go, b"g")
            .map_err(|e| Error::sys("write", "slirp4netns", e.into()))?;
        let mut byte = [0u8];
        loop {
            match rustix::io::read(&self.ready, &mut byte) {
                Ok(1) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Ok(_) => {
                    return Err(Error::Setup(
                        "slirp4netns exited before the network was up".to_owned(),
                    ));
                }
                Err(e) => return Err(Error::sys("read", "slirp4netns ready", e.into())),
            }
        }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        let _ = sys::kill(self.pid, libc::SIGKILL);
        let _ = sys::waitpid(self.pid);
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
