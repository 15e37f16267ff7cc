//! What `kiln run` adds to a RUN step's container ([`crate::Executor::run_interactive`]): the
//! caller's stdin, published ports, and live signals to PID 1 ([`RunControl`]).

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::spec::CancelToken;

/// The extras of an interactive run.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Interactive {
    /// `-i`: the container's stdin (fd 0 of its command) is this descriptor (the caller's
    /// stdin, a pipe, a file); `None`: /dev/null, as for RUN.
    pub stdin: Option<OwnedFd>,
    /// `-t`: the command's stdin, stdout and stderr are a pty of this size (its controlling
    /// terminal); its output arrives as [`crate::Stream::Stdout`] in raw chunks, and
    /// [`Interactive::stdin`] is written to it. Not with an OCI runtime.
    pub tty: Option<WindowSize>,
    /// `-p`: ports of the host forwarded to the container; only with
    /// [`crate::Network::Private`] (slirp4netns port forwarding).
    pub publish: Vec<PortMapping>,
}

impl Interactive {
    /// No stdin, no tty, no ports (then [`crate::Executor::run_interactive`] is `run` with
    /// live signals).
    pub fn new() -> Self {
        Self::default()
    }
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The transport of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// One `-p HOST_IP:HOST_PORT:CONTAINER_PORT/PROTO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on (`0.0.0.0` for all).
    pub host_ip: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Live control of a running container from other threads (a signal-handling thread): signals
/// for its PID 1, and cancellation as a [`CancelToken`]. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Mutex<Vec<i32>>,
    resize: Mutex<Option<WindowSize>>,
    killed: AtomicBool,
    cancel: CancelToken,
}

impl RunControl {
    /// A control with nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `signal` (`libc::SIGINT`, `SIGTERM`, `SIGHUP`, ...) to the container's PID 1 as
    /// soon as it exists. A PID 1 ignores signals it installed no handler for (the kernel's
    /// rule for a namespace's init), so what a second Ctrl-C does is the caller's choice
    /// (docker: [`RunControl::kill`]).
    pub fn signal(&self, signal: i32) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(signal);
    }

    /// Kills PID 1 (and so the whole container) with SIGKILL; the run then returns the
    /// command's status (signal 9, exit code 137), not [`crate::Error::Cancelled`].
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        self.signal(libc::SIGKILL);
    }

    /// A new size for the pty (the caller's SIGWINCH); nothing without one.
    pub fn resize(&self, size: WindowSize) {
        *self
            .inner
            .resize
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(size);
    }

    /// The size asked for since the last call.
    pub(crate) fn take_resize(&self) -> Option<WindowSize> {
        self.inner
            .resize
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Whether [`RunControl::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::SeqCst)
    }

    /// Cancels the run as [`CancelToken::cancel`] does (the run returns
    /// [`crate::Error::Cancelled`]).
    pub fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// The cancellation token the run watches.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.inner.cancel
    }

    /// The signals sent since the last call, in order.
    pub(crate) fn take_pending(&self) -> Vec<i32> {
        std::mem::take(
            &mut *self
                .inner
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}
