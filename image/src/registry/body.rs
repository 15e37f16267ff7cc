//! Reading response bodies from a registry that may be broken or hostile. A body is never read
//! past the length the caller expects (a blob's descriptor size, the manifest cap, the cap on
//! an error or token reply): at most one byte more is asked of the server, and that byte fails
//! the read at once. `Content-Length` is not trusted either way; only bytes that arrive count.
//!
//! Time is bounded by two rules that together cover every slow server:
//! - the idle rule, enforced by the transport (ureq's per-read timeout,
//!   [`RegistryOptions::read_timeout`](super::RegistryOptions::read_timeout)): no byte at all
//!   for that long fails the read, so a server that stalls after its headers is caught;
//! - the low-speed rule, enforced here (curl's `--speed-limit`/`--speed-time`): in every
//!   [`progress_window`](super::RegistryOptions::progress_window) the body must bring at least
//!   [`progress_min_bytes`](super::RegistryOptions::progress_min_bytes), or what is left of it
//!   if that is less. A server dripping one byte a second never trips the idle rule but fails
//!   this one after one window.
//!
//! A failed read is an [`io::Error`] carrying a [`BodyFault`], so callers can tell "too long"
//! (the server is wrong: do not retry) from "too slow" (the connection may be bad: retry on a
//! fresh one) from a plain transport error.

use std::fmt;
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// Why a guarded body read was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// More than `limit` bytes arrived.
    TooLong {
        /// The most the caller accepts.
        limit: u64,
    },
    /// Fewer than `needed` bytes arrived during one progress window.
    TooSlow {
        /// Bytes received in the window.
        got: u64,
        /// Bytes the window needed.
        needed: u64,
        /// The window.
        window: Duration,
    },
}

impl fmt::Display for BodyFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { limit } => write!(f, "the server sent more than {limit} bytes"),
            Self::TooSlow {
                got,
                needed,
                window,
            } => write!(
                f,
                "too slow: {got} bytes in {}s, at least {needed} needed",
                window.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for BodyFault {}

/// The low-speed rule of [`GuardedBody`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgressRule {
    /// The window.
    pub(crate) window: Duration,
    /// Bytes needed per window (0 turns the rule off).
    pub(crate) min_bytes: u64,
}

/// A body reader that stops at `limit` bytes and enforces a [`ProgressRule`].
pub(crate) struct GuardedBody<R> {
    inner: R,
    limit: u64,
    read: u64,
    rule: ProgressRule,
    window_start: Instant,
    read_at_window_start: u64,
}

impl<R: Read> GuardedBody<R> {
    /// Wraps `inner`, accepting at most `limit` bytes.
    pub(crate) fn new(inner: R, limit: u64, rule: ProgressRule) -> Self {
        Self {
            inner,
            limit,
            read: 0,
            rule,
            window_start: Instant::now(),
            read_at_window_start: 0,
        }
    }

    fn check_progress(&mut self) -> io::Result<()> {
        if self.rule.min_bytes == 0 || self.rule.window.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) < self.rule.window {
            return Ok(());
        }
        let got = self.read - self.read_at_window_start;
        // Near the end of the body, what is left is all a window can bring.
        let needed = self
            .rule
            .min_bytes
            .min(self.limit.saturating_sub(self.read_at_window_start));
        if got < needed {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                BodyFault::TooSlow {
                    got,
                    needed,
                    window: self.rule.window,
                },
            ));
        }
        self.window_start = now;
        self.read_at_window_start = self.read;
        Ok(())
    }
}

impl<R: Read> Read for GuardedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Ask for at most one byte past the limit: enough to see that the body is too long.
        let room = self.limit.saturating_add(1).saturating_sub(self.read);
        let want = usize::try_from(room).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(BodyFault::TooLong { limit: self.limit }));
        }
        if n > 0 {
            self.check_progress()?;
        }
        Ok(n)
    }
}

/// The [`BodyFault`] an I/O error carries, if any.
pub(crate) fn fault_of(e: &io::Error) -> Option<&BodyFault> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<BodyFault>())
}

/// Whether an I/O error is the transport's per-read (idle) timeout.
pub(crate) fn is_idle_timeout(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// Reads a whole guarded body into memory.
pub(crate) fn read_to_vec(
    reader: impl Read,
    limit: u64,
    rule: ProgressRule,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GuardedBody::new(reader, limit, rule).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_RULE: ProgressRule = ProgressRule {
        window: Duration::ZERO,
        min_bytes: 0,
    };

    /// Yields `chunk` bytes per read, forever, sleeping `pause` before each.
    struct Drip {
        chunk: usize,
        pause: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.pause);
            let n = self.chunk.min(buf.len());
            buf[..n].fill(b'x');
            Ok(n)
        }
    }

    #[test]
    fn stops_one_byte_past_the_limit() {
        let endless = Drip {
            chunk: 1 << 16,
            pause: Duration::ZERO,
        };
        let mut g = GuardedBody::new(endless, 100_000, NO_RULE);
        let mut sink = Vec::new();
        let err = g.read_to_end(&mut sink).unwrap_err();
        assert_eq!(
            fault_of(&err),
            Some(&BodyFault::TooLong { limit: 100_000 }),
            "{err}"
        );
        assert!(sink.len() <= 100_000, "bytes past the limit were handed on");
        assert!(g.read <= 100_001);
        // Exactly the limit is fine.
        let data = vec![7u8; 1000];
        assert_eq!(read_to_vec(&data[..], 1000, NO_RULE).unwrap(), data);
        assert!(read_to_vec(&data[..], 999, NO_RULE).is_err());
    }

    #[test]
    fn a_drip_fails_the_low_speed_rule_after_one_window() {
        let rule = ProgressRule {
            window: Duration::from_millis(200),
            min_bytes: 1000,
        };
        let drip = Drip {
            chunk: 1,
            pause: Duration::from_millis(10),
        };
        let started = Instant::now();
        let err = read_to_vec(drip, 1 << 20, rule).unwrap_err();
        assert!(
            matches!(
                fault_of(&err),
                Some(BodyFault::TooSlow { needed: 1000, .. })
            ),
            "{err}"
        );
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
        // The tail of a body may be smaller than a window's minimum.
        let slow_tail = Drip {
            chunk: 10,
            pause: Duration::from_millis(150),
        };
        // 20 bytes in 300 ms pass a 200 ms window wanting 1000: they are all that is left.
        let mut g = GuardedBody::new(slow_tail, 20, rule);
        let mut buf = [0u8; 64];
        let mut total = 0;
        for _ in 0..2 {
            total += g.read(&mut buf).unwrap();
        }
        assert_eq!(total, 20);
    }
}
