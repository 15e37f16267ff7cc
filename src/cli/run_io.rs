//! `kiln run`'s live side: SIGINT/SIGTERM forwarded to the container's PID 1 (a second one
//! kills it, as docker), `-t` (the terminal in raw mode, its size followed), `-p`/`-P` parsing
//! and the host ports docker would pick for `-p 80`.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use kiln_executor as ex;

use super::UsageError;

/// Write end of the pipe the handler reports to (-1: none).
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write is async-signal-safe; the buffer is one valid byte.
        let _ = unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP to the container's PID 1 through `control`; the second
/// SIGINT/SIGTERM kills the container, and so does the first once kiln's parent is gone (the
/// parent-death SIGTERM of `kiln compose up`'s children: nobody is left to send a second).
pub(crate) fn forward_signals(control: ex::RunControl) -> std::io::Result<()> {
    let parent = rustix::process::getppid();
    let (read, write): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write);
    std::thread::Builder::new()
        .name("kiln-run-signals".into())
        .spawn(move || {
            let mut f = std::fs::File::from(read);
            let mut b = [0u8; 1];
            let mut stops = 0;
            while matches!(f.read(&mut b), Ok(1)) {
                let sig = i32::from(b[0]);
                if sig == libc::SIGHUP {
                    control.signal(sig);
                    continue;
                }
                stops += 1;
                // Reparented already when the parent-death signal arrives.
                if stops == 1 && rustix::process::getppid() == parent {
                    control.signal(sig);
                } else {
                    control.kill();
                }
            }
        })?;
    // The handler only calls write and reads an atomic.
    super::signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP], on_signal)
}

/// The size of the terminal on stdout (else stdin), if either is one.
pub(crate) fn window_size() -> Option<ex::WindowSize> {
    [
        rustix::termios::tcgetwinsize(std::io::stdout()),
        rustix::termios::tcgetwinsize(std::io::stdin()),
    ]
    .into_iter()
    .flatten()
    .find(|w| w.ws_row > 0 && w.ws_col > 0)
    .map(|w| ex::WindowSize {
        rows: w.ws_row,
        cols: w.ws_col,
    })
}

/// Follows the terminal's size into the container's pty (polled every 200 ms) until dropped.
pub(crate) struct ResizeWatch(Arc<AtomicBool>);

impl ResizeWatch {
    /// Starts following from `initial`.
    pub(crate) fn start(control: ex::RunControl, initial: ex::WindowSize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut last = initial;
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if let Some(now) = window_size()
                    && now != last
                {
                    control.resize(now);
                    last = now;
                }
            }
        });
        Self(stop)
    }
}

impl Drop for ResizeWatch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The terminal on stdin in raw mode (the container's pty does the line discipline), restored
/// when dropped.
pub(crate) struct RawMode(rustix::termios::Termios);

impl RawMode {
    /// Raw mode when stdin is a terminal.
    pub(crate) fn enter() -> Option<Self> {
        let saved = rustix::termios::tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &raw,
        )
        .ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// One `-p`: `[IP:][HOST:]CTR[/tcp|/udp]`; without a host port (`80`, `IP::80`) the host port
/// is 0, for [`pick_host_ports`] to choose as docker does.
pub(crate) fn parse_publish(s: &str) -> anyhow::Result<ex::PortMapping> {
    let bad = || {
        anyhow::Error::from(UsageError(format!(
            "invalid -p {s:?}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"
        )))
    };
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, ex::Protocol::Tcp),
        Some((p, "udp")) => (p, ex::Protocol::Udp),
        Some(_) => return Err(bad()),
        None => (s, ex::Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("0.0.0.0", "", *c),
        [c, h] => ("0.0.0.0", *h, *c),
        [c, h, ip] => (ip.trim_matches(['[', ']']), *h, *c),
        _ => return Err(bad()),
    };
    let container_port: u16 = ctr.parse().map_err(|_| bad())?;
    if container_port == 0 {
        return Err(bad());
    }
    Ok(ex::PortMapping {
        host_ip: ip.parse().map_err(|_| bad())?,
        host_port: if host.is_empty() {
            0
        } else {
            host.parse().map_err(|_| bad())?
        },
        container_port,
        protocol,
    })
}

/// `-P`: every port the image EXPOSEs (`80/tcp`, `53/udp`, `8080`) on a host port docker-style
/// chosen by [`pick_host_ports`].
pub(crate) fn publish_all(exposed: &[String]) -> anyhow::Result<Vec<ex::PortMapping>> {
    exposed
        .iter()
        .map(|e| {
            parse_publish(e).map_err(|_| anyhow::anyhow!("the image exposes an invalid port {e:?}"))
        })
        .collect()
}

/// Gives every mapping without a host port (0) a free one, as docker does for `-p 80` and `-P`
/// (the kernel's ephemeral range, which docker's port allocator also reads), and returns the
/// lines `docker port` would print for them (`80/tcp -> 0.0.0.0:32768`).
pub(crate) fn pick_host_ports(ports: &mut [ex::PortMapping]) -> anyhow::Result<Vec<String>> {
    let mut shown = Vec::new();
    for p in ports.iter_mut().filter(|p| p.host_port == 0) {
        let addr = std::net::SocketAddr::new(p.host_ip, 0);
        // Bound only to learn a free port; slirp4netns binds it right after this returns.
        let port = match p.protocol {
            ex::Protocol::Tcp => std::net::TcpListener::bind(addr).and_then(|l| l.local_addr()),
            ex::Protocol::Udp => std::net::UdpSocket::bind(addr).and_then(|l| l.local_addr()),
        }
        .map_err(|e| {
            anyhow::anyhow!(
                "-p {}: finding a free host port on {}: {e}",
                p.container_port,
                p.host_ip
            )
        })?
        .port();
        p.host_port = port;
        let proto = match p.protocol {
            ex::Protocol::Tcp => "tcp",
            ex::Protocol::Udp => "udp",
        };
        shown.push(format!(
            "{}/{proto} -> {}",
            p.container_port,
            std::net::SocketAddr::new(p.host_ip, port)
        ));
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_as_docker() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            (
                p.host_ip.to_string(),
                p.host_port,
                p.container_port,
                p.protocol
            ),
            ("0.0.0.0".into(), 8080, 80, ex::Protocol::Tcp)
        );
        let p = parse_publish("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.to_string(),
                p.host_port,
                p.container_port,
                p.protocol
            ),
            ("127.0.0.1".into(), 53, 5353, ex::Protocol::Udp)
        );
        let p = parse_publish("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_publish("127.0.0.1::53/udp").unwrap();
        assert_eq!(
            (p.host_ip.to_string(), p.host_port, p.protocol),
            ("127.0.0.1".into(), 0, ex::Protocol::Udp)
        );
        let mut ports = publish_all(&["8080/tcp".into(), "9090".into()]).unwrap();
        ports[1].host_port = 7;
        let shown = pick_host_ports(&mut ports).unwrap();
        assert_ne!(ports[0].host_port, 0);
        assert_eq!(ports[1].host_port, 7, "a given host port is kept");
        assert_eq!(
            shown,
            [format!("8080/tcp -> 0.0.0.0:{}", ports[0].host_port)]
        );
        assert!(parse_publish("0").is_err());
        assert!(parse_publish("a:b").is_err());
        assert!(parse_publish("1:2/sctp").is_err());
    }
}
