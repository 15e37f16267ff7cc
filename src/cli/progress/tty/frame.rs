//! One frame of the tty display: the finished steps committed above the live region, then the
//! region itself (running steps with spinner, time and last output lines, the summary line),
//! every line cut to the terminal's width and the region kept within its height.

use std::fmt::Write as _;
use std::time::Duration;

use super::{LOG_TAIL, SPINNER, State, TICK};
use crate::cli::progress::{StepInfo, StepStatus, StepTable, familiar, secs};

/// Replaces control characters (a tab, an escape sequence's ESC) by spaces, and keeps what a
/// terminal would show of a line rewritten with `\r` (progress bars): the text after the last.
pub(super) fn printable(s: &str) -> String {
    let s = s.trim_end_matches('\r');
    let s = s.rsplit('\r').next().unwrap_or(s);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Cuts `s` to `width` characters, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

/// `left` and `right` on one line of `width` columns, right-aligned; `left` is cut first.
fn columns(left: &str, right: &str, width: usize) -> String {
    let (l, r) = (left.chars().count(), right.chars().count());
    if l + 1 + r <= width {
        format!("{left}{}{right}", " ".repeat(width - l - r))
    } else if width >= r + 8 {
        format!("{} {right}", cut(left, width - r - 1))
    } else {
        cut(left, width)
    }
}

/// A rendered line: its text with color codes, and its visible width.
struct Line {
    text: String,
    width: usize,
}

fn paint(text: String, code: &str, color: bool) -> Line {
    let width = text.chars().count();
    if color && !code.is_empty() {
        Line {
            text: format!("\x1b[{code}m{text}\x1b[0m"),
            width,
        }
    } else {
        Line { text, width }
    }
}

/// One step's line. `over`: the build ended, so a step still running was cancelled.
fn step_line(step: &StepInfo, now: Duration, width: usize, color: bool, over: bool) -> Line {
    let instruction = printable(step.instruction.lines().next().unwrap_or_default());
    let (marker, right, code) = match &step.status {
        StepStatus::Running if over => (" =>".to_owned(), "CANCELED".to_owned(), "33"),
        StepStatus::Running => {
            let spin = SPINNER[(now.as_millis() / TICK.as_millis()) as usize % SPINNER.len()];
            (format!(" {spin}"), secs(step.elapsed(now)), "")
        }
        StepStatus::Cached => (" =>".to_owned(), "CACHED".to_owned(), "34"),
        StepStatus::Done(d) => (" =>".to_owned(), format!("DONE {}", secs(*d)), "34"),
        StepStatus::Failed(_) => (" =>".to_owned(), "ERROR".to_owned(), "31"),
    };
    let left = format!("{marker} {} {instruction}", step.label());
    paint(columns(&left, &right, width), code, color)
}

fn summary_line(table: &StepTable, now: Duration, width: usize, color: bool) -> Line {
    let (done, _) = table.counts();
    let total = table.total.max(table.steps.len());
    let (elapsed, tail, code) = match table.finished {
        Some((true, e)) => (e, " FINISHED", ""),
        Some((false, e)) => (e, " FAILED", "31"),
        None => (now, "", ""),
    };
    let text = format!("[+] Building {} ({done}/{total}){tail}", secs(elapsed));
    paint(cut(&text, width), code, color)
}

/// Draws one frame: prints newly finished steps above the live region, then redraws it.
/// `last` commits everything (the build is over).
pub(super) fn frame(
    st: &mut State,
    now: Duration,
    (cols, rows): (usize, usize),
    color: bool,
    last: bool,
) {
    let width = cols.saturating_sub(1).max(10);
    let max_rows = rows.saturating_sub(1).max(2);
    let mut buf = String::from("\x1b[?25l");
    // Back to the top of the live region. After a width change, lines drawn wider than the new
    // width have been re-wrapped by the terminal and take more rows.
    let up: usize = st
        .drawn
        .iter()
        .map(|&w| if w > width { w.div_ceil(width) } else { 1 })
        .sum();
    if up > 0 {
        let _ = write!(buf, "\r\x1b[{up}A");
    }
    if st.width != width {
        buf.push_str("\x1b[J");
        st.width = width;
    }
    let emit = |buf: &mut String, line: &Line| {
        buf.push_str(&line.text);
        buf.push_str("\x1b[K\n");
    };
    // Commit the finished prefix (all of it at the end).
    while st.committed < st.table.steps.len()
        && (last || st.table.steps[st.committed].status != StepStatus::Running)
    {
        let step = &st.table.steps[st.committed];
        emit(&mut buf, &step_line(step, now, width, color, last));
        if st.explain
            && let Some(r) = &step.reason
        {
            let l = paint(
                cut(&format!("   cache miss: {}", printable(r)), width),
                "2",
                color,
            );
            emit(&mut buf, &l);
        }
        st.committed += 1;
    }
    if last && let Some((digest, names)) = &st.table.image {
        let l = paint(
            cut(&format!(" => writing image {digest}"), width),
            "34",
            color,
        );
        emit(&mut buf, &l);
        for n in names {
            emit(
                &mut buf,
                &paint(
                    cut(&format!(" => naming to {}", familiar(n)), width),
                    "34",
                    color,
                ),
            );
        }
    }
    // The live region: steps not yet committed, tails of running ones, summary.
    let live: Vec<&StepInfo> = st.table.steps[st.committed..].iter().collect();
    let mut lines = Vec::new();
    for tail in [LOG_TAIL, 3, 1, 0] {
        lines.clear();
        for s in &live {
            lines.push(step_line(s, now, width, color, last));
            if s.status == StepStatus::Running {
                for (_, l) in s.logs.iter().skip(s.logs.len().saturating_sub(tail)) {
                    lines.push(paint(
                        cut(&format!("   {}", printable(l)), width),
                        "2",
                        color,
                    ));
                }
            }
        }
        if lines.len() < max_rows {
            break;
        }
    }
    if lines.len() >= max_rows {
        // Still too tall: only running steps, as many as fit.
        let running: Vec<&&StepInfo> = live
            .iter()
            .filter(|s| s.status == StepStatus::Running)
            .collect();
        let fit = max_rows.saturating_sub(2).min(running.len());
        lines = running[..fit]
            .iter()
            .map(|s| step_line(s, now, width, color, last))
            .collect();
        if running.len() > fit {
            lines.push(paint(
                cut(&format!(" … {} more running", running.len() - fit), width),
                "",
                color,
            ));
        }
    }
    lines.push(summary_line(&st.table, now, width, color));
    for l in &lines {
        emit(&mut buf, l);
    }
    buf.push_str("\x1b[J\x1b[?25h");
    st.drawn = lines.iter().map(|l| l.width).collect();
    if last {
        // The final frame stays as it is on the screen.
        st.drawn.clear();
    }
    st.out.emit(&buf);
}
