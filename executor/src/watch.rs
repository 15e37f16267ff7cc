//! Pumping a running init: its stdout and stderr split into lines for the caller's callback
//! (and the tail kept for the error message), its events collected, the handshake timed, and a
//! cancellation relayed.

use std::collections::VecDeque;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::entry::HANDSHAKE_TIMEOUT;
use crate::error::{Error, Result};
use crate::interactive::RunControl;
use crate::proto::InitEvent;
use crate::spec::{CancelToken, LAST_LINES, Stream};
use crate::sys;

/// Lines longer than this are delivered in pieces.
const MAX_LINE: usize = 64 * 1024;

/// How long a cancelled init gets to clean up before it is killed outright.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The spawned init, killed (and with it the container, by its parent-death signal) and reaped
/// if the run is abandoned before it was waited for.
pub(crate) struct ReapOnDrop {
    pub(crate) child: Child,
    pub(crate) reaped: bool,
}

impl ReapOnDrop {
    pub(crate) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Splits a byte stream into lines for the callback and the tail.
struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(Stream, &[u8])) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            emit(self.stream, &self.pending[start..=start + pos]);
            start += pos + 1;
        }
        while self.pending.len() - start >= MAX_LINE {
            emit(self.stream, &self.pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    fn finish(&mut self, emit: &mut dyn FnMut(Stream, &[u8])) {
        if !self.pending.is_empty() {
            emit(self.stream, &self.pending);
            self.pending.clear();
        }
    }
}

pub(crate) type Watched = (Vec<InitEvent>, VecDeque<String>, bool);

/// Pumps the child's stdout, stderr and event socket until all three are closed.
pub(crate) fn watch(
    child: &mut Child,
    sock: UnixStream,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &CancelToken,
    control: Option<&RunControl>,
    tty_input: Option<&OwnedFd>,
) -> Result<Watched> {
    let stdout = child
        .stdout
        .take()
        .map(|p| fs::File::from(OwnedFd::from(p)));
    let stderr = child
        .stderr
        .take()
        .map(|p| fs::File::from(OwnedFd::from(p)));
    let mut sources: Vec<(Option<Stream>, Option<fs::File>)> = vec![
        (Some(Stream::Stdout), stdout),
        (Some(Stream::Stderr), stderr),
        (None, Some(fs::File::from(OwnedFd::from(sock)))),
    ];
    let mut splitters = [
        LineSplitter {
            stream: Stream::Stdout,
            pending: Vec::new(),
        },
        LineSplitter {
            stream: Stream::Stderr,
            pending: Vec::new(),
        },
    ];
    let mut tail: VecDeque<String> = VecDeque::with_capacity(LAST_LINES + 1);
    let mut emit = |stream: Stream, line: &[u8]| {
        on_output(stream, line);
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if tail.len() == LAST_LINES {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(text).into_owned());
    };
    let mut events_buf = Vec::new();
    // The container's PID 1, once the init reported it, for the control's signals.
    let mut pid1: Option<OwnedFd> = None;
    let handshake_by = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut cancelled_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    // `-t`: PID 1's pty master (sent with its `Tty` event), read raw as stdout, and the
    // caller's stdin written to it.
    let mut master: Option<fs::File> = None;
    let mut input: Option<fs::File> = tty_input
        .and_then(|fd| fd.try_clone().ok())
        .map(fs::File::from);
    loop {
        let open: Vec<usize> = (0..sources.len())
            .filter(|&i| sources[i].1.is_some())
            .collect();
        if open.is_empty() && master.is_none() {
            break;
        }
        if let Some(m) = &master
            && let Some(size) = control.and_then(RunControl::take_resize)
        {
            let _ = sys::set_window_size(m.as_fd(), size.rows, size.cols);
        }
        if events_buf.is_empty() && sources[2].1.is_some() && Instant::now() > handshake_by {
            let _ = child.kill();
            return Err(Error::InitNotStarted {
                binary: PathBuf::new(),
                reason: format!(
                    "no handshake within {} s, so it was killed: most likely it ran its own \
                     main instead of the kiln init (the kiln-executor constructor did not run \
                     in it); re-execute a binary that links kiln-executor (the default, the \
                     current executable) or whose main calls \
                     `kiln_executor::init_main_if_requested()` first",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            });
        }
        if let Some(control) = control {
            if pid1.is_none() {
                pid1 = started_pid(&events_buf).and_then(|pid| sys::pidfd_open(pid).ok());
            }
            if let Some(fd) = &pid1 {
                for signal in control.take_pending() {
                    let _ = sys::pidfd_signal(fd.as_fd(), signal);
                }
            }
        }
        if cancel.is_cancelled() {
            match cancelled_at {
                None => {
                    // The init kills PID 1 (and so the whole PID namespace), then cleans up.
                    let _ = sys::kill(child.id() as i32, libc::SIGTERM);
                    cancelled_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() > CANCEL_GRACE => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        let ready = {
            let mut fds: Vec<_> = open
                .iter()
                .filter_map(|&i| sources[i].1.as_ref().map(|fd| fd.as_fd()))
                .collect();
            fds.extend(master.as_ref().map(AsFd::as_fd));
            fds.extend(input.as_ref().filter(|_| master.is_some()).map(AsFd::as_fd));
            sys::poll_readable(&fds, 50).map_err(|e| Error::sys("poll", "container output", e))?
        };
        let (ready, tty_ready) = ready.split_at(open.len());
        if let Some(m) = &master {
            if tty_ready.first() == Some(&true) {
                match (&*m).read(&mut buf) {
                    Ok(n) if n > 0 => emit(Stream::Stdout, &buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave descriptor is closed, the container is gone.
                    _ => master = None,
                }
            }
            if tty_ready.get(1) == Some(&true)
                && let (Some(m), Some(i)) = (&master, &input)
            {
                match (&*i).read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = std::io::Write::write_all(&mut &*m, &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => input = None,
                }
            }
        }
        for (&i, &ready) in open.iter().zip(ready) {
            if !ready {
                continue;
            }
            let n = {
                let Some(mut file) = sources[i].1.as_ref() else {
                    continue;
                };
                let read = if sources[i].0.is_none() {
                    // The event socket may carry the pty master.
                    crate::fdpass::recv_some(file, &mut buf).map(|(n, fds)| {
                        if let Some(fd) = fds.into_iter().next() {
                            master = Some(fs::File::from(fd));
                        }
                        n
                    })
                } else {
                    file.read(&mut buf)
                };
                match read {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                }
            };
            match (sources[i].0, n) {
                (Some(_), 0) => {
                    splitters[i].finish(&mut emit);
                    sources[i].1 = None;
                }
                (Some(_), n) => splitters[i].feed(&buf[..n], &mut emit),
                (None, 0) => sources[i].1 = None,
                (None, n) => events_buf.extend_from_slice(&buf[..n]),
            }
        }
    }
    let mut events = Vec::new();
    for line in events_buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let event = serde_json::from_slice(line).map_err(|e| {
            Error::Protocol(format!(
                "bad event `{}`: {e}",
                String::from_utf8_lossy(line)
            ))
        })?;
        events.push(event);
    }
    Ok((events, tail, cancelled_at.is_some()))
}

/// The host pid of PID 1 from a `Started` event among the complete lines of `events`.
fn started_pid(events: &[u8]) -> Option<i32> {
    let complete = &events[..=events.iter().rposition(|&b| b == b'\n')?];
    complete
        .split(|&b| b == b'\n')
        .find_map(|line| match serde_json::from_slice(line) {
            Ok(InitEvent::Started { pid }) => Some(pid),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads_and_long_lines_are_chunked() {
        let mut got = Vec::new();
        let mut emit = |s: Stream, l: &[u8]| got.push((s, l.to_vec()));
        let mut sp = LineSplitter {
            stream: Stream::Stderr,
            pending: Vec::new(),
        };
        sp.feed(b"ab", &mut emit);
        sp.feed(b"c\nd\ne", &mut emit);
        sp.feed(&vec![b'x'; MAX_LINE], &mut emit);
        sp.finish(&mut emit);
        assert_eq!(got[0], (Stream::Stderr, b"abc\n".to_vec()));
        assert_eq!(got[1].1, b"d\n");
        assert_eq!(got[2].1.len(), MAX_LINE);
        assert_eq!(got[2].1[0], b'e');
        assert_eq!(got[3].1, b"x");
        assert_eq!(got.len(), 4);
    }
}
