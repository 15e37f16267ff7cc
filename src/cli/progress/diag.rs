//! Diagnostics: with `--debug` or `KILN_LOG` (env-filter syntax, e.g. `KILN_LOG=kiln_solver=debug`)
//! the CLI installs a `tracing` subscriber that prints events and each span's close with its
//! timings (`step{id=2 name=RUN make}: close time.busy=1.2s time.idle=3ms`). Lines go to stderr
//! through the active progress display: the tty display prints them above its live region
//! and redraws it, so the two never tear each other.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Where a finished diagnostic line goes instead of plain stderr (the tty display's inserter).
pub(crate) type Hook = Box<dyn Fn(&str) + Send + Sync>;

static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

/// The filter of `--debug`: kiln's own crates at debug, everything else at info.
const DEBUG_FILTER: &str = "info,kiln=debug,kiln_solver=debug,kiln_image=debug,\
kiln_snapshotter=debug,kiln_executor=debug,kiln_parser=debug,kiln_fs=debug,kiln_userns=debug";

/// Installs the subscriber when `debug` or `KILN_LOG` asks for one (`KILN_LOG` wins).
/// Returns an error text when `KILN_LOG` is not a valid filter.
pub(crate) fn install(debug: bool) -> Result<(), String> {
    let filter = match std::env::var("KILN_LOG").ok().filter(|v| !v.is_empty()) {
        Some(v) => EnvFilter::try_new(&v).map_err(|e| format!("invalid KILN_LOG `{v}`: {e}"))?,
        None if debug => EnvFilter::new(DEBUG_FILTER),
        None => return Ok(()),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Lines)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// Sends diagnostic lines to `hook` (`None`: straight to stderr again).
pub(crate) fn set_hook(hook: Option<Hook>) {
    *HOOK.lock().unwrap_or_else(PoisonError::into_inner) = hook;
}

fn emit(text: &str) {
    let hook = HOOK.lock().unwrap_or_else(PoisonError::into_inner);
    match hook.as_ref() {
        Some(h) => h(text),
        None => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// The subscriber's writer factory: one [`Line`] per event.
struct Lines;

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One formatted event, emitted whole when dropped.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            emit(&String::from_utf8_lossy(&self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_line_goes_whole_to_the_hook() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        set_hook(Some(Box::new(move |t| {
            s.lock().unwrap().push(t.to_owned());
        })));
        {
            let mut l = Lines.make_writer();
            l.write_all(b"step{id=1}: ").unwrap();
            l.write_all(b"close time.busy=1ms\n").unwrap();
        }
        set_hook(None);
        assert_eq!(*seen.lock().unwrap(), ["step{id=1}: close time.busy=1ms\n"]);
    }
}
