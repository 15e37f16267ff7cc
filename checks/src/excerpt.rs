//! The Dockerfile excerpt BuildKit prints under a warning or an error (`solver/errdefs`,
//! `Source.Print`): a `NAME:LINE` header, the marked lines prefixed `>>>` with context around
//! them (four lines for a one-line mark, two for a longer one), between `-----` rules. One
//! implementation for the `--check` text and the CLI's build error report.

use std::fmt::Write as _;

/// What to quote and how.
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a> {
    /// The name in the header (`Dockerfile`, or the `-f` file name).
    pub name: &'a str,
    /// The whole Dockerfile text.
    pub text: &'a str,
    /// The 1-based, inclusive line ranges to mark; the header names the first marked line.
    pub marked: &'a [(usize, usize)],
    /// A 1-based column (in characters) on the first marked line: the header reads
    /// `NAME:LINE:COL` and a caret line under that line points at it, as rustc does. A column
    /// past the end of its line points at nothing and shows no caret.
    pub column: Option<usize>,
    /// Drop the blank context lines after the last marked one (the empty "line" after a
    /// trailing newline, which BuildKit prints).
    pub trim_blank_tail: bool,
}

impl Excerpt<'_> {
    /// The excerpt, `None` when nothing is marked or the first mark lies outside the text.
    pub fn render(&self) -> Option<String> {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let first = self.marked.iter().map(|&(start, _)| start).min()?;
        if first < 1 || first > lines.len() {
            return None;
        }
        let last = self
            .marked
            .iter()
            .map(|&(start, end)| end.max(start))
            .max()
            .unwrap_or(first)
            .clamp(first, lines.len());
        let pad = if first == last { 4 } else { 2 };
        let (mut start, mut end, mut p) = (first, last, 0);
        while p < pad {
            if start > 1 {
                start -= 1;
                p += 1;
            }
            if end != lines.len() {
                end += 1;
                p += 1;
            }
            p += 1;
        }
        if self.trim_blank_tail {
            while end > last && lines[end - 1].is_empty() {
                end -= 1;
            }
        }
        let text_first = lines[first - 1]
            .strip_suffix('\r')
            .unwrap_or(lines[first - 1]);
        let column = self
            .column
            .filter(|&c| c >= 1 && c <= text_first.chars().count());
        let mut out = match column {
            Some(c) => format!("{}:{first}:{c}\n--------------------\n", self.name),
            None => format!("{}:{first}\n--------------------\n", self.name),
        };
        for (i, text) in lines.iter().enumerate().take(end).skip(start - 1) {
            let n = i + 1;
            let marked = self.marked.iter().any(|&(s, e)| s <= n && e.max(s) >= n);
            let mark = if marked { ">>>" } else { "   " };
            let _ = writeln!(out, " {n:>3} | {mark} {text}");
            if let (Some(c), true) = (column, n == first) {
                let _ = writeln!(out, " {:>3} |     {}^", "", caret_indent(text_first, c));
            }
        }
        out.push_str("--------------------\n");
        Some(out)
    }
}

/// The blanks before column `column` (1-based) of `text`: tabs where the text has tabs, so the
/// caret lines up however tabs are shown.
fn caret_indent(text: &str, column: usize) -> String {
    text.chars()
        .take(column - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excerpt(text: &str, marked: &[(usize, usize)], trim: bool) -> Option<String> {
        Excerpt {
            name: "Dockerfile",
            text,
            marked,
            column: None,
            trim_blank_tail: trim,
        }
        .render()
    }

    #[test]
    fn several_ranges_are_marked_under_the_first_ones_header() {
        let text = "L1\nL2\nL3\nL4\nL5\nL6\nL7\n";
        assert_eq!(
            excerpt(text, &[(5, 5), (2, 3)], false).unwrap(),
            "Dockerfile:2\n--------------------\n   1 |     L1\n   2 | >>> L2\n   3 | >>> L3\n   4 |     L4\n   5 | >>> L5\n   6 |     L6\n--------------------\n"
        );
    }

    #[test]
    fn the_blank_tail_is_kept_like_buildkit_or_trimmed() {
        assert_eq!(
            excerpt("FROM a\nRUN x\n", &[(2, 2)], false).unwrap(),
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> RUN x\n   3 |     \n--------------------\n"
        );
        assert_eq!(
            excerpt("FROM a\nRUN x\n", &[(2, 2)], true).unwrap(),
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> RUN x\n--------------------\n"
        );
    }

    #[test]
    fn nothing_marked_or_out_of_range_is_none() {
        assert!(excerpt("FROM a\n", &[], false).is_none());
        assert!(excerpt("FROM a\n", &[(0, 0)], false).is_none());
        assert!(excerpt("FROM a\n", &[(7, 7)], false).is_none());
    }
}
